//! How values read on a page: percent-encoded path segments and query values, the links to
//! a VM, an image or an operation, times, durations, sizes, and a hint cleaned of CLI-only advice.

use banger_api::{Timestamp, validate};

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters stay), as
/// the API's client does.
pub fn encode(text: &str) -> String {
    banger_api::client::escape(text)
}

/// `path?k=v&...`, leaving out empty values.
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

pub fn vm_href(name: &str) -> String {
    format!("/vms/{}", encode(name))
}

pub fn image_href(name: &str) -> String {
    format!("/images/{}", encode(name))
}

pub fn operation_href(id: &str) -> String {
    format!("/operations/{}", encode(id))
}

/// `2025-11-23 12:13:20 UTC`.
pub fn time(t: Timestamp) -> String {
    let text = t.to_string();
    match (text.get(..10), text.get(11..19)) {
        (Some(date), Some(clock)) => format!("{date} {clock} UTC"),
        _ => text,
    }
}

/// `35ms`, `1.4s`, `12s`, `3m 5s`: a VM's start stages take milliseconds
/// ([`banger_api::time::format_duration`], as the CLI and the TUI write them).
pub fn duration(ms: u64) -> String {
    banger_api::time::format_duration(std::time::Duration::from_millis(ms))
}

pub fn size(bytes: u64) -> String {
    validate::format_size(bytes)
}

/// A service's hint, as far as it makes sense in a browser. Hints are written for the CLI;
/// their parts (separated by `; `) naming its flags or commands (`--vcpus`, `banger vm list`)
/// would only confuse here, so only the others are kept.
pub fn console_hint(hint: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = hint?
        .split("; ")
        .filter(|part| !part.contains("--") && !part.contains("`banger"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

pub(super) fn percent(part: u64, whole: u64) -> u32 {
    part.saturating_mul(100)
        .checked_div(whole)
        .map_or(0, |p| p.min(100) as u32)
}
