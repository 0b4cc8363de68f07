//! The `banger.*` kernel command-line parameters that tell the init where its disks are and
//! what to run. Every one has a default that matches how banger attaches disks (base image
//! first, overlay disk second, work disk third), so a plain command line boots:
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `banger.base=DEV` | `/dev/vda` | the image's read-only root filesystem (ext4) |
//! | `banger.overlay=DEV` | `/dev/vdb` | the VM's overlay disk (ext4 with `upper/`, `work/`) |
//! | `banger.work=DEV` | `/dev/vdc` | the VM's work disk, mounted at `/root`; `none` to skip |
//! | `banger.config=DEV` | none | the VM's config drive ([`crate::config_drive`]), applied to the overlay |
//! | `banger.init=PATH` | `/sbin/init` | the image's init, run after the root switch |
//! | `banger.timeout=SECONDS` | `10` | how long to wait for each device and the NIC |
//!
//! `DEV` is a device path (`/dev/vdb`) or `LABEL=name`, matched against ext4 filesystem
//! labels (banger labels its disks [`OVERLAY_LABEL`] and [`WORK_LABEL`]; the config drive's
//! label is [`CONFIG_DRIVE_LABEL`]), for VMMs whose device order is not the attach order. An
//! unknown `banger.*` parameter is an error rather than silently ignored: a typo would
//! otherwise boot with a default the user did not ask for.
//!
//! [`OVERLAY_LABEL`]: banger_guest_contract::paths::OVERLAY_LABEL
//! [`WORK_LABEL`]: banger_guest_contract::paths::WORK_LABEL
//! [`CONFIG_DRIVE_LABEL`]: banger_guest_contract::paths::CONFIG_DRIVE_LABEL

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where to find a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Path(PathBuf),
    /// An ext4 filesystem label.
    Label(String),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

/// What the command line asks of the init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub base: DeviceSpec,
    pub overlay: DeviceSpec,
    /// `None` when `banger.work=none`.
    pub work: Option<DeviceSpec>,
    /// The config drive; `None` (the default) when the VM's files are already on its overlay.
    pub config: Option<DeviceSpec>,
    pub init: String,
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base: DeviceSpec::Path("/dev/vda".into()),
            overlay: DeviceSpec::Path("/dev/vdb".into()),
            work: Some(DeviceSpec::Path("/dev/vdc".into())),
            config: None,
            init: "/sbin/init".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A `banger.*` parameter is unknown or has a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("unknown kernel parameter {0}")]
    Unknown(String),

    #[error("kernel parameter {name}={value:?}: {problem}")]
    BadValue {
        name: String,
        value: String,
        problem: &'static str,
    },
}

/// Reads the `banger.*` parameters from the contents of `/proc/cmdline`; everything else on
/// the line is the kernel's or the image init's business.
pub fn parse(cmdline: &str) -> Result<Config, CmdlineError> {
    let mut config = Config::default();
    for word in split(cmdline) {
        let Some(param) = word.strip_prefix("banger.") else {
            continue;
        };
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let bad = |problem| CmdlineError::BadValue {
            name: format!("banger.{key}"),
            value: value.to_owned(),
            problem,
        };
        match key {
            "base" => config.base = device(value).ok_or_else(|| bad(DEVICE_PROBLEM))?,
            "overlay" => config.overlay = device(value).ok_or_else(|| bad(DEVICE_PROBLEM))?,
            "work" if value == "none" => config.work = None,
            "work" => config.work = Some(device(value).ok_or_else(|| bad(DEVICE_PROBLEM))?),
            "config" if value == "none" => config.config = None,
            "config" => config.config = Some(device(value).ok_or_else(|| bad(DEVICE_PROBLEM))?),
            "init" if value.starts_with('/') => config.init = value.to_owned(),
            "init" => return Err(bad("must be an absolute path")),
            "timeout" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .ok_or_else(|| bad("must be a whole number of seconds, 1 to 3600"))?;
                config.timeout = Duration::from_secs(secs);
            }
            _ => return Err(CmdlineError::Unknown(format!("banger.{key}"))),
        }
    }
    Ok(config)
}

const DEVICE_PROBLEM: &str = "must be a /dev path or LABEL=name";

fn device(value: &str) -> Option<DeviceSpec> {
    if let Some(label) = value.strip_prefix("LABEL=") {
        (!label.is_empty() && label.len() <= 16).then(|| DeviceSpec::Label(label.to_owned()))
    } else if value.starts_with("/dev/") && value.len() > 5 && !value.contains("..") {
        Some(DeviceSpec::Path(value.into()))
    } else {
        None
    }
}

/// Splits a command line into words the way the kernel does: on whitespace, except inside
/// double quotes, which are removed.
fn split(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_guest_contract::paths::{CONFIG_DRIVE_LABEL, OVERLAY_LABEL, WORK_LABEL};

    #[test]
    fn defaults_without_banger_parameters() {
        let c = parse("console=ttyS0 reboot=k panic=-1 quiet\n").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.base, DeviceSpec::Path("/dev/vda".into()));
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_parameter() {
        let c = parse(&format!(
            "console=ttyS0 banger.base=/dev/vdc banger.overlay=LABEL={OVERLAY_LABEL} \
             banger.work=none banger.init=/lib/systemd/systemd banger.timeout=30 \
             banger.config=LABEL={CONFIG_DRIVE_LABEL}",
        ))
        .unwrap();
        assert_eq!(c.config, Some(DeviceSpec::Label(CONFIG_DRIVE_LABEL.into())));
        assert_eq!(c.base, DeviceSpec::Path("/dev/vdc".into()));
        assert_eq!(c.overlay, DeviceSpec::Label(OVERLAY_LABEL.into()));
        assert_eq!(c.work, None);
        assert_eq!(c.init, "/lib/systemd/systemd");
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert_eq!(c.overlay.to_string(), format!("LABEL={OVERLAY_LABEL}"));
    }

    #[test]
    fn quotes_group_words() {
        let c = parse(&format!(r#"foo="a b" banger.work="LABEL={WORK_LABEL}" x"#)).unwrap();
        assert_eq!(c.work, Some(DeviceSpec::Label(WORK_LABEL.into())));
        assert_eq!(split(r#"a "b c" d="e f""#), ["a", "b c", "d=e f"]);
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            parse("banger.overlya=/dev/vdb").unwrap_err(),
            CmdlineError::Unknown("banger.overlya".into())
        );
        for bad in [
            "banger.base=vda",
            "banger.base=/dev/",
            "banger.work=LABEL=",
            "banger.config=vdd",
            "banger.overlay=/dev/../etc/passwd",
            "banger.init=sbin/init",
            "banger.timeout=0",
            "banger.timeout=ten",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                matches!(err, CmdlineError::BadValue { .. }),
                "{bad}: {err:?}"
            );
            let name = bad.split('=').next().unwrap();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
