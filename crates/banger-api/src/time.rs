//! Wall-clock instants on the wire: RFC 3339 strings in UTC, millisecond precision kept
//! internally so stage timings survive a round trip. Also how every client of banger writes a
//! duration for people ([`format_duration`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, serialised as an RFC 3339 UTC timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH
        }
    }

    /// Time elapsed from `self` until `later`, zero when `later` is earlier.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_millis(self.to_system_time())
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let t = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis() as i64;
        Ok(Timestamp(ms))
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

/// A duration for people, the one way the CLI, the TUI and the web console write one: `35ms`,
/// `1.4s` (a start's stages take milliseconds), then coarser the longer it is: `12s`, `2m 5s`,
/// `3h 2m`, `4d 1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    match s {
        _ if ms < 1_000 => format!("{ms}ms"),
        0..10 => format!("{:.1}s", d.as_secs_f64()),
        10..60 => format!("{s}s"),
        60..3_600 => format!("{}m {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, s % 3_600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_people() {
        let ms = Duration::from_millis;
        assert_eq!(format_duration(ms(0)), "0ms");
        assert_eq!(format_duration(ms(35)), "35ms");
        assert_eq!(format_duration(ms(999)), "999ms");
        assert_eq!(format_duration(ms(1_000)), "1.0s");
        assert_eq!(format_duration(ms(1_340)), "1.3s");
        assert_eq!(format_duration(ms(9_940)), "9.9s");
        assert_eq!(format_duration(ms(12_345)), "12s");
        assert_eq!(format_duration(ms(59_940)), "59s");
        assert_eq!(format_duration(ms(60_000)), "1m 0s");
        assert_eq!(format_duration(ms(125_000)), "2m 5s");
        assert_eq!(format_duration(ms(3_720_000)), "1h 2m");
        assert_eq!(format_duration(ms(97_200_000)), "1d 3h");
    }

    #[test]
    fn round_trips_through_json() {
        let t = Timestamp(1_763_900_000_123);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-11-23T12:13:20.123Z\"");
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn until_never_goes_negative() {
        assert_eq!(Timestamp(10).until(Timestamp(5)), Duration::ZERO);
        assert_eq!(Timestamp(5).until(Timestamp(10)), Duration::from_millis(5));
    }
}
