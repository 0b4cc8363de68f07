//! `config.toml`: what a user can set, its defaults, and the checks that turn a typo into an
//! error naming the key and the file instead of a silently ignored setting.

use std::path::{Path, PathBuf};

use banger_api::{VmmKind, validate};
use serde::Deserialize;

/// Daemon configuration. An absent file means every default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Image used by `vm create` when no `--image` is given.
    pub default_image: String,
    /// IPv4 subnet of banger's private network; the host takes `.1`.
    pub subnet: String,
    /// VMM used by `vm create` when no `--vmm` is given.
    pub vmm: VmmKind,
    pub defaults: VmDefaults,
}

/// Sizes a VM gets when `vm create` does not name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDefaults {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_image: "debian".into(),
            subnet: "172.30.0.0/24".into(),
            vmm: VmmKind::Auto,
            defaults: VmDefaults {
                vcpus: 2,
                memory_mib: 1024,
                disk_bytes: 8 * validate::GIB,
                work_disk_bytes: 8 * validate::GIB,
            },
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_image: Option<String>,
    subnet: Option<String>,
    vmm: Option<String>,
    defaults: Option<RawDefaults>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    vcpus: Option<i64>,
    memory_mib: Option<i64>,
    disk: Option<String>,
    work_disk: Option<String>,
}

impl Config {
    /// Loads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses the text of a config file; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            invalid(
                e.to_string()
                    .trim_start_matches("TOML parse error ")
                    .trim()
                    .to_owned(),
            )
        })?;
        let key_error = |key: &str, e: banger_api::ApiError| {
            invalid(format!(
                "`{key}`: {}{}",
                e.message,
                e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
            ))
        };
        let mut config = Config::default();
        if let Some(image) = raw.default_image {
            validate::name("image", &image).map_err(|e| key_error("default_image", e))?;
            config.default_image = image;
        }
        if let Some(subnet) = raw.subnet {
            banger_store::NetworkPool::new(&subnet)
                .map_err(|e| invalid(format!("`subnet`: {e}")))?;
            config.subnet = subnet;
        }
        if let Some(vmm) = raw.vmm {
            config.vmm = vmm.parse().map_err(|e| invalid(format!("`vmm`: {e}")))?;
        }
        if let Some(d) = raw.defaults {
            if let Some(v) = d.vcpus {
                config.defaults.vcpus =
                    validate::vcpus(v).map_err(|e| key_error("defaults.vcpus", e))?;
            }
            if let Some(v) = d.memory_mib {
                config.defaults.memory_mib =
                    validate::memory_mib(v).map_err(|e| key_error("defaults.memory_mib", e))?;
            }
            if let Some(v) = d.disk {
                config.defaults.disk_bytes = size("defaults.disk", &v, validate::MIN_DISK_BYTES)
                    .map_err(|e| key_error("defaults.disk", e))?;
            }
            if let Some(v) = d.work_disk {
                config.defaults.work_disk_bytes =
                    size("work disk", &v, validate::MIN_WORK_DISK_BYTES)
                        .map_err(|e| key_error("defaults.work_disk", e))?;
            }
        }
        Ok(config)
    }
}

fn size(field: &str, text: &str, min: i64) -> Result<u64, banger_api::ApiError> {
    let bytes = validate::parse_size(text)?;
    validate::disk_bytes(field, i64::try_from(bytes).unwrap_or(i64::MAX), min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/home/u/.config/banger/config.toml"))
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn reads_every_key() {
        let config = parse(
            r#"
            default_image = "base"
            subnet = "10.77.0.0/16"
            vmm = "qemu"
            [defaults]
            vcpus = 4
            memory_mib = 2048
            disk = "16G"
            work_disk = "512M"
            "#,
        )
        .unwrap();
        assert_eq!(config.default_image, "base");
        assert_eq!(config.subnet, "10.77.0.0/16");
        assert_eq!(config.vmm, VmmKind::Qemu);
        assert_eq!(config.defaults.vcpus, 4);
        assert_eq!(config.defaults.memory_mib, 2048);
        assert_eq!(config.defaults.disk_bytes, 16 * validate::GIB);
        assert_eq!(config.defaults.work_disk_bytes, 512 * validate::MIB);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = parse("default_imag = \"x\"").unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("default_imag"), "{err}");
        let err = parse("[defaults]\nmemory = 5").unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("[defaults]\nvcpus = 0", "defaults.vcpus"),
            ("[defaults]\nmemory_mib = -5", "defaults.memory_mib"),
            ("[defaults]\ndisk = \"lots\"", "defaults.disk"),
            ("[defaults]\nwork_disk = \"1M\"", "defaults.work_disk"),
            ("subnet = \"10.0.0.1/33\"", "subnet"),
            ("vmm = \"xen\"", "vmm"),
            ("default_image = \"Not A Name\"", "default_image"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
            assert!(err.contains("config.toml"), "{err}");
        }
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = parse("[defaults]\nvcpus = \"two\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("vcpus"), "{err}");
    }
}
