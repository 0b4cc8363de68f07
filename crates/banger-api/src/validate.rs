//! Validation rules shared by the CLI (first line of defence, no round trip) and the daemon
//! (the authority, which checks again before anything is stored and adds host-specific limits).

use crate::error::ApiError;

/// Smallest guest memory banger accepts: below this a Debian guest does not get to its init.
pub const MIN_MEMORY_MIB: i64 = 128;
/// Firecracker's vCPU ceiling; QEMU microvm follows the same limit in banger.
pub const MAX_VCPUS: i64 = 32;
/// Smallest root overlay disk.
pub const MIN_DISK_BYTES: i64 = 256 * MIB as i64;
/// Smallest work disk (`/root`).
pub const MIN_WORK_DISK_BYTES: i64 = 64 * MIB as i64;
/// Largest disk banger creates (16 TiB): ext4 with 4 KiB blocks and sparse files handle it.
pub const MAX_DISK_BYTES: i64 = 16 * 1024 * 1024 * MIB as i64;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// Most ready VMs one image's warm pool may keep: each holds its memory while it waits.
pub const MAX_POOL_SIZE: i64 = 8;

/// A warm pool size: 0 (off) to [`MAX_POOL_SIZE`].
pub fn pool_size(value: i64) -> Result<u32, ApiError> {
    if !(0..=MAX_POOL_SIZE).contains(&value) {
        return Err(ApiError::invalid(format!(
            "a pool size must be between 0 and {MAX_POOL_SIZE} (got {value})"
        ))
        .with_hint("each pooled VM holds its memory while it waits; 0 turns the pool off"));
    }
    Ok(value as u32)
}

/// A VM or image name must be a DNS label: it becomes the guest's hostname.
pub fn name(kind: &str, value: &str) -> Result<(), ApiError> {
    let hint =
        "use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit";
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{kind} name is empty")).with_hint(hint));
    }
    if value.len() > 63 {
        return Err(ApiError::invalid(format!(
            "{kind} name {value:?} is {} characters long; the limit is 63",
            value.len()
        ))
        .with_hint(hint));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let extra = if bad.is_ascii_uppercase() {
            " (names are lower-case)"
        } else {
            ""
        };
        return Err(
            ApiError::invalid(format!("{kind} name {value:?} contains {bad:?}{extra}"))
                .with_hint(hint),
        );
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(
            ApiError::invalid(format!("{kind} name {value:?} starts or ends with '-'"))
                .with_hint(hint),
        );
    }
    Ok(())
}

/// The distributions `image bootstrap` can build.
pub const BOOTSTRAP_DISTROS: &[&str] = &["debian"];

/// The distribution of `image bootstrap`.
pub fn bootstrap_distro(value: &str) -> Result<(), ApiError> {
    if BOOTSTRAP_DISTROS.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("cannot bootstrap {value:?}")).with_hint(
            "banger bootstraps debian; adopt another system's boot files with `banger image register`",
        ))
    }
}

/// A Debian suite (`bookworm`, `trixie`, `stable`, `bookworm-backports`): debootstrap makes it
/// part of a path and a URL, so only lower-case letters, digits and `-`, starting with a
/// letter, at most 32 characters.
pub fn suite(value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 32
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(
            ApiError::invalid(format!("{value:?} is not a Debian suite name"))
                .with_hint("use a codename such as bookworm or trixie"),
        )
    }
}

/// vCPU count: at least 1, at most [`MAX_VCPUS`]. The daemon also caps it at the host's CPUs.
pub fn vcpus(value: i64) -> Result<u32, ApiError> {
    if value < 1 {
        return Err(
            ApiError::invalid(format!("vCPUs must be at least 1 (got {value})"))
                .with_hint(format!("pass --vcpus with a value from 1 to {MAX_VCPUS}")),
        );
    }
    if value > MAX_VCPUS {
        return Err(
            ApiError::invalid(format!("vCPUs must be at most {MAX_VCPUS} (got {value})"))
                .with_hint(format!("pass --vcpus with a value from 1 to {MAX_VCPUS}")),
        );
    }
    Ok(value as u32)
}

/// Guest memory in MiB: at least [`MIN_MEMORY_MIB`]. The daemon also caps it at host RAM.
pub fn memory_mib(value: i64) -> Result<u32, ApiError> {
    if value < MIN_MEMORY_MIB {
        return Err(ApiError::invalid(format!(
            "memory must be at least {MIN_MEMORY_MIB} MiB (got {value})"
        ))
        .with_hint("pass --memory in MiB, e.g. --memory 1024"));
    }
    if value > u32::MAX as i64 {
        return Err(
            ApiError::invalid(format!("memory of {value} MiB is beyond any host"))
                .with_hint("pass --memory in MiB, e.g. --memory 1024"),
        );
    }
    Ok(value as u32)
}

/// A disk size in bytes for `field` ("disk" or "work disk").
pub fn disk_bytes(field: &str, value: i64, min: i64) -> Result<u64, ApiError> {
    if value < min {
        return Err(ApiError::invalid(format!(
            "{field} size must be at least {} (got {})",
            format_size(min as u64),
            if value < 0 {
                value.to_string()
            } else {
                format_size(value as u64)
            }
        ))
        .with_hint("sizes take a unit: 512M, 4G, 1T"));
    }
    if value > MAX_DISK_BYTES {
        return Err(ApiError::invalid(format!(
            "{field} size must be at most {} (got {})",
            format_size(MAX_DISK_BYTES as u64),
            format_size(value as u64)
        ))
        .with_hint("sizes take a unit: 512M, 4G, 1T"));
    }
    Ok(value as u64)
}

/// Parses `512M`, `4G`, `1.5G`, `10GiB`, `4096` (bytes). Units are binary (K = 1024).
pub fn parse_size(text: &str) -> Result<u64, ApiError> {
    let hint = "write a number with a unit: 512M, 4G, 1.5T (K, M, G, T are powers of 1024)";
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || ApiError::invalid(format!("{text:?} is not a size")).with_hint(hint);
    if number.is_empty() {
        return Err(bad());
    }
    let multiplier = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => KIB,
        "M" | "MB" | "MIB" => MIB,
        "G" | "GB" | "GIB" => GIB,
        "T" | "TB" | "TIB" => TIB,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier).ok_or_else(bad);
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes the way [`parse_size`] reads them back: `512M`, `4G`, `1.5G`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")];
    for (size, unit) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if bytes.is_multiple_of(size) {
                format!("{}{unit}", bytes / size)
            } else {
                let text = format!("{value:.1}");
                format!("{}{unit}", text.trim_end_matches(".0"))
            };
        }
    }
    format!("{bytes}B")
}

/// The address a published port listens on when none is given: only this host can connect.
pub const DEFAULT_PUBLISH_ADDRESS: &str = "127.0.0.1";

const PUBLISH_HINT: &str = "write HOSTPORT:GUESTPORT (e.g. 8080:4096) or ADDR:HOSTPORT:GUESTPORT \
     with an IPv4 ADDR; ports are 1 to 65535";

/// Reads a `--publish` value: `HOSTPORT:GUESTPORT` or `ADDR:HOSTPORT:GUESTPORT`, optionally
/// ending in `/tcp`. UDP is refused: banger forwards TCP only.
pub fn parse_publish(spec: &str) -> Result<crate::PublishPortRequest, ApiError> {
    let bad = |why: String| {
        ApiError::invalid(format!("--publish {spec:?}: {why}")).with_hint(PUBLISH_HINT)
    };
    let (body, protocol) = match spec.rsplit_once('/') {
        Some((body, protocol)) => (body, Some(protocol)),
        None => (spec, None),
    };
    match protocol.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => {}
        Some("udp") => {
            return Err(ApiError::invalid(format!(
                "--publish {spec:?}: banger forwards TCP ports only, not UDP"
            ))
            .with_hint("publish the TCP port (drop the /udp), or reach the guest's UDP service at its own IP from this host"));
        }
        Some(other) => return Err(bad(format!("unknown protocol {other:?}; only tcp"))),
    }
    let parts: Vec<&str> = body.split(':').collect();
    let (address, host, guest) = match parts.as_slice() {
        [host, guest] => (None, *host, *guest),
        [address, host, guest] => (Some((*address).to_owned()), *host, *guest),
        _ => {
            return Err(bad(
                "expected HOSTPORT:GUESTPORT or ADDR:HOSTPORT:GUESTPORT".into(),
            ));
        }
    };
    let number = |what: &str, text: &str| -> Result<i64, ApiError> {
        text.trim()
            .parse::<i64>()
            .map_err(|_| bad(format!("{what} {text:?} is not a number")))
    };
    let request = crate::PublishPortRequest {
        address,
        host_port: number("host port", host)?,
        guest_port: number("guest port", guest)?,
    };
    published_port(&request)?;
    Ok(request)
}

/// A TCP port number: 1 to 65535. `what` names it in the message ("host port").
pub fn port(what: &str, value: i64) -> Result<u16, ApiError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(
            ApiError::invalid(format!("{what} must be from 1 to 65535 (got {value})"))
                .with_hint(PUBLISH_HINT),
        ),
    }
}

/// A port to publish, checked: both ports in range and the address an IPv4 address
/// ([`DEFAULT_PUBLISH_ADDRESS`] when absent).
pub fn published_port(
    request: &crate::PublishPortRequest,
) -> Result<crate::PublishedPort, ApiError> {
    let host_port = port("host port", request.host_port)?;
    let guest_port = port("guest port", request.guest_port)?;
    let address = match request.address.as_deref() {
        None => DEFAULT_PUBLISH_ADDRESS.to_owned(),
        Some(text) => text
            .trim()
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| {
                ApiError::invalid(format!(
                    "the address to publish on, {text:?}, is not an IPv4 address"
                ))
                .with_hint("leave it out for 127.0.0.1 (this host only), or give one of this host's IPv4 addresses")
            })?
            .to_string(),
    };
    Ok(crate::PublishedPort {
        address,
        host_port,
        guest_port,
    })
}

/// Every port of one VM, checked one by one and against each other: a host port can be
/// published once.
pub fn published_ports(
    requests: &[crate::PublishPortRequest],
) -> Result<Vec<crate::PublishedPort>, ApiError> {
    let mut ports: Vec<crate::PublishedPort> = Vec::with_capacity(requests.len());
    for request in requests {
        let port = published_port(request)?;
        if ports.iter().any(|p| p.host_port == port.host_port) {
            return Err(ApiError::invalid(format!(
                "host port {} is published twice",
                port.host_port
            ))
            .with_hint(
                "a host port forwards to one guest port; give each --publish its own host port",
            ));
        }
        ports.push(port);
    }
    Ok(ports)
}

/// The guest ports an image publishes by default: each 1 to 65535, none twice.
pub fn image_ports(ports: &[i64]) -> Result<Vec<u16>, ApiError> {
    let mut out: Vec<u16> = Vec::with_capacity(ports.len());
    for &port in ports {
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                ApiError::invalid(format!("guest port {port} is not a port"))
                    .with_hint("a guest port is a number from 1 to 65535")
            })?;
        if out.contains(&port) {
            return Err(
                ApiError::invalid(format!("guest port {port} is given twice"))
                    .with_hint("give each --publish a different guest port"),
            );
        }
        out.push(port);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_ports_are_ports_once_each() {
        assert_eq!(image_ports(&[4096, 22]).unwrap(), [4096, 22]);
        assert!(
            image_ports(&[0])
                .unwrap_err()
                .message
                .contains("guest port 0")
        );
        assert!(image_ports(&[70000]).unwrap_err().message.contains("70000"));
        assert!(image_ports(&[-1]).is_err());
        assert!(
            image_ports(&[80, 80])
                .unwrap_err()
                .message
                .contains("twice")
        );
    }

    #[test]
    fn bootstrap_inputs() {
        bootstrap_distro("debian").unwrap();
        let err = bootstrap_distro("ubuntu").unwrap_err();
        assert!(err.hint.unwrap().contains("image register"));
        for ok in ["bookworm", "trixie", "bookworm-backports", "stable"] {
            suite(ok).unwrap();
        }
        for bad in ["", "Bookworm", "../etc", "a b", "1abc", "x/y"] {
            assert!(suite(bad).is_err(), "{bad:?}");
        }
        assert!(suite(&"x".repeat(33)).is_err());
    }

    #[test]
    fn names_follow_dns_label_rules() {
        for ok in ["dev", "a", "web-1", "0x", &"a".repeat(63)] {
            assert!(name("VM", ok).is_ok(), "{ok} should be accepted");
        }
        for bad in [
            "",
            "-dev",
            "dev-",
            "Dev",
            "dev_1",
            "dév",
            "a.b",
            &"a".repeat(64),
        ] {
            let err = name("VM", bad).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::InvalidInput, "{bad}");
            assert!(err.hint.is_some());
        }
        assert!(
            name("VM", "Dev")
                .unwrap_err()
                .message
                .contains("lower-case")
        );
    }

    #[test]
    fn vcpus_and_memory_reject_zero_and_negative() {
        assert_eq!(vcpus(1).unwrap(), 1);
        assert!(vcpus(0).unwrap_err().message.contains("at least 1 (got 0)"));
        assert!(vcpus(-3).unwrap_err().message.contains("got -3"));
        assert!(vcpus(33).unwrap_err().message.contains("at most 32"));
        assert_eq!(memory_mib(128).unwrap(), 128);
        assert!(memory_mib(0).is_err());
        assert!(memory_mib(-1).is_err());
        assert!(memory_mib(127).unwrap_err().message.contains("128 MiB"));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512M").unwrap(), 512 * MIB);
        assert_eq!(parse_size("4G").unwrap(), 4 * GIB);
        assert_eq!(parse_size("4g").unwrap(), 4 * GIB);
        assert_eq!(parse_size("10GiB").unwrap(), 10 * GIB);
        assert_eq!(parse_size("1.5G").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 2T ").unwrap(), 2 * TIB);
        for bad in ["", "G", "4X", "-4G", "4..G", "1e9", "99999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn format_size_round_trips() {
        for bytes in [512 * MIB, 4 * GIB, 3 * GIB / 2, 1023, TIB] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
        assert_eq!(format_size(8 * GIB), "8G");
    }

    #[test]
    fn disk_sizes_have_bounds() {
        assert!(disk_bytes("disk", MIN_DISK_BYTES, MIN_DISK_BYTES).is_ok());
        let err = disk_bytes("work disk", 4096, MIN_WORK_DISK_BYTES).unwrap_err();
        assert_eq!(err.message, "work disk size must be at least 64M (got 4K)");
        assert!(disk_bytes("disk", -1, MIN_DISK_BYTES).is_err());
        assert!(disk_bytes("disk", MAX_DISK_BYTES + 1, MIN_DISK_BYTES).is_err());
    }

    #[test]
    fn publish_specs_parse() {
        let p = parse_publish("8080:4096").unwrap();
        assert_eq!(
            published_port(&p).unwrap(),
            crate::PublishedPort {
                address: "127.0.0.1".into(),
                host_port: 8080,
                guest_port: 4096
            }
        );
        let p = parse_publish("0.0.0.0:80:8000/tcp").unwrap();
        assert_eq!(p.address.as_deref(), Some("0.0.0.0"));
        assert_eq!((p.host_port, p.guest_port), (80, 8000));
        assert_eq!(parse_publish("1:65535/TCP").unwrap().guest_port, 65535);
    }

    #[test]
    fn bad_publish_specs_say_what_is_wrong() {
        let message = |spec: &str| parse_publish(spec).unwrap_err().message;
        assert_eq!(
            message("8080:53/udp"),
            "--publish \"8080:53/udp\": banger forwards TCP ports only, not UDP"
        );
        assert_eq!(message("0:80"), "host port must be from 1 to 65535 (got 0)");
        assert_eq!(
            message("8080:65536"),
            "guest port must be from 1 to 65535 (got 65536)"
        );
        assert_eq!(
            message("8080:-1"),
            "guest port must be from 1 to 65535 (got -1)"
        );
        assert_eq!(
            message("http:80"),
            "--publish \"http:80\": host port \"http\" is not a number"
        );
        assert_eq!(
            message("8080"),
            "--publish \"8080\": expected HOSTPORT:GUESTPORT or ADDR:HOSTPORT:GUESTPORT"
        );
        assert_eq!(
            message("localhost:8080:80"),
            "the address to publish on, \"localhost\", is not an IPv4 address"
        );
        assert_eq!(
            message("8080:80/sctp"),
            "--publish \"8080:80/sctp\": unknown protocol \"sctp\"; only tcp"
        );
        for spec in ["8080:53/udp", "0:80", "8080", "a:b:c:d"] {
            assert!(parse_publish(spec).unwrap_err().hint.is_some(), "{spec}");
        }
    }

    #[test]
    fn a_host_port_is_published_once_per_vm() {
        let req = |host_port, guest_port| crate::PublishPortRequest {
            address: None,
            host_port,
            guest_port,
        };
        assert_eq!(
            published_ports(&[req(8080, 80), req(8081, 80)])
                .unwrap()
                .len(),
            2
        );
        let err = published_ports(&[req(8080, 80), req(8080, 81)]).unwrap_err();
        assert_eq!(err.message, "host port 8080 is published twice");
    }
}
