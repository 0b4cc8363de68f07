//! `config.toml` parsing: every key read, every default, every mistake named by key and file,
//! and every key documented in `docs/configuration.md`.

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
            firecracker_bin = "/opt/fc/firecracker"
            disk_pool = 3
            spare_vmm = false
            build_cache_max = "2G"
            [pool]
            base = 2
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
    assert_eq!(
        config.firecracker_bin.as_deref(),
        Some(Path::new("/opt/fc/firecracker"))
    );
    assert_eq!(config.disk_pool, 3);
    assert!(!config.spare_vmm);
    assert_eq!(config.build_cache_max, 2 * validate::GIB);
    assert_eq!(parse("build_cache_max = \"0\"").unwrap().build_cache_max, 0);
    assert_eq!(config.pool.get("base"), Some(&2));
    assert_eq!(config.defaults.vcpus, 4);
    assert_eq!(config.defaults.memory_mib, 2048);
    assert_eq!(config.defaults.disk_bytes, 16 * validate::GIB);
    assert_eq!(config.defaults.work_disk_bytes, 512 * validate::MIB);
    assert_eq!(config.web, WebConfig::default());
}

#[test]
fn reads_the_jail_keys() {
    assert_eq!(parse("").unwrap().jail, JailSettings::default());
    let jail = parse(
        "jailer = true\njailer_bin = \"/opt/fc/jailer\"\njail_uids = \"70000-70009\"\n\
             jail_dir = \"/srv/banger\"\njail_memory_overhead = \"128M\"",
    )
    .unwrap()
    .jail;
    assert_eq!(jail.mode, JailMode::On);
    assert_eq!(
        jail.jailer_bin.as_deref(),
        Some(Path::new("/opt/fc/jailer"))
    );
    assert_eq!(jail.uids, (70_000, 70_009));
    assert_eq!(jail.dir.as_deref(), Some(Path::new("/srv/banger")));
    assert_eq!(jail.memory_overhead_mib, 128);
    assert_eq!(parse("jailer = false").unwrap().jail.mode, JailMode::Off);
    assert_eq!(
        parse("jailer = \"auto\"").unwrap().jail.mode,
        JailMode::Auto
    );
    for (text, key) in [
        ("jailer = \"yes\"", "jailer"),
        ("jailer_bin = \"jailer\"", "jailer_bin"),
        ("jail_uids = \"5\"", "jail_uids"),
        ("jail_uids = \"0-10\"", "jail_uids"),
        ("jail_dir = \"jail\"", "jail_dir"),
        ("jail_memory_overhead = \"lots\"", "jail_memory_overhead"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
    }
}

#[test]
fn reads_the_qemu_keys() {
    assert_eq!(parse("").unwrap().qemu, QemuSettings::default());
    assert!(QemuSettings::default().sandbox);
    let qemu = parse(
        "qemu_sandbox = false\nqemu_uids = \"80000-80009\"\nqemu_cgroups = false\n\
             qemu_memory_overhead = \"96M\"",
    )
    .unwrap()
    .qemu;
    assert!(!qemu.sandbox);
    assert_eq!(qemu.uids, (80_000, 80_009));
    assert!(!qemu.cgroups);
    assert_eq!(qemu.memory_overhead_mib, 96);
    assert!(QemuSettings::default().cgroups);
    for text in [
        "qemu_uids = \"0-9\"",
        "qemu_uids = \"9-1\"",
        "qemu_sandbox = \"on\"",
        "qemu_cgroups = 1",
        "qemu_memory_overhead = \"lots\"",
        "qemu_memory_overhead = \"100G\"",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("qemu_"), "{text}: {err}");
    }
}

#[test]
fn web_defaults_to_loopback_port_7878() {
    let web = parse("").unwrap().web;
    assert!(web.enabled);
    assert_eq!(web.listen.to_string(), DEFAULT_WEB_LISTEN);
    assert!(!web.allow_remote);
}

#[test]
fn reads_the_web_table() {
    let web = parse("[web]\nenabled = false\nlisten = \"[::1]:0\"")
        .unwrap()
        .web;
    assert!(!web.enabled);
    assert_eq!(web.listen.to_string(), "[::1]:0");
    let web = parse("[web]\nlisten = \"192.168.1.5:7878\"\nallow_remote = true")
        .unwrap()
        .web;
    assert_eq!(web.listen.to_string(), "192.168.1.5:7878");
    assert!(web.allow_remote);
}

#[test]
fn remote_web_listen_needs_allow_remote() {
    let err = parse("[web]\nlisten = \"192.168.1.5:7878\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`web.listen`"), "{err}");
    assert!(err.contains("allow_remote = true"), "{err}");
    assert!(err.contains("config.toml"), "{err}");
    let err = parse("[web]\nlisten = \"0.0.0.0:7878\"\nallow_remote = true")
        .unwrap_err()
        .to_string();
    assert!(err.contains("every interface"), "{err}");
}

#[test]
fn bad_web_values_name_the_key() {
    for (text, key) in [
        ("[web]\nlisten = \"localhost\"", "web.listen"),
        ("[web]\nlisten = \"127.0.0.1\"", "web.listen"),
        ("[web]\nlisten = \"127.0.0.1:99999\"", "web.listen"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        assert!(err.contains("config.toml"), "{err}");
    }
    let err = parse("[web]\nport = 80").unwrap_err().to_string();
    assert!(err.contains("port"), "{err}");
    let err = parse("[web]\nenabled = \"yes\"").unwrap_err().to_string();
    assert!(err.contains("enabled"), "{err}");
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
        ("firecracker_bin = \"bin/firecracker\"", "firecracker_bin"),
        ("default_image = \"Not A Name\"", "default_image"),
        ("disk_pool = 9", "disk_pool"),
        ("disk_pool = -1", "disk_pool"),
        ("build_cache_max = \"lots\"", "build_cache_max"),
        ("[pool]\nbase = 9", "pool.base"),
        ("[pool]\nNot_An_Image = 1", "pool.Not_An_Image"),
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

/// The fields of a `Deserialize` struct, as its derive names them to a deserializer.
fn fields_of<T: serde::de::DeserializeOwned>() -> Vec<&'static str> {
    struct Fields(Vec<&'static str>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("fields read")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Fields {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields = Fields(Vec::new());
    let _ = T::deserialize(&mut fields);
    fields.0
}

/// Every key the daemon reads is in docs/configuration.md, in its table, and the example
/// there parses: a key added without its documentation fails here.
#[test]
fn every_key_is_documented() {
    let doc = include_str!("../../../../docs/configuration.md");
    let example = doc
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has a ```toml block of the keys");
    // The text of each table: top-level keys come before the first `[table]`.
    let table = |name: &str| -> String {
        let mut current = String::new();
        let mut text = String::new();
        for line in example.lines() {
            if let Some(t) = line
                .trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
            {
                current = t.to_owned();
            } else if current == name {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    };
    let documented = |table_text: &str, key: &str| {
        table_text.lines().any(|line| {
            let line = line.trim_start().trim_start_matches("# ");
            line.starts_with(&format!("{key} ="))
        })
    };
    for (name, fields) in [
        ("", fields_of::<RawConfig>()),
        ("defaults", fields_of::<RawDefaults>()),
        ("web", fields_of::<RawWeb>()),
        ("dns", fields_of::<RawDns>()),
        ("admission", fields_of::<RawAdmission>()),
    ] {
        assert!(!fields.is_empty(), "no fields read for [{name}]");
        let text = table(name);
        for field in fields {
            if name.is_empty() && ["defaults", "web", "dns", "admission"].contains(&field) {
                continue;
            }
            // A table of image names, which are the user's.
            if name.is_empty() && field == "pool" {
                assert!(
                    !table("pool").is_empty(),
                    "no [pool] in docs/configuration.md"
                );
                continue;
            }
            assert!(
                documented(&text, field),
                "config key `{}{field}` is not in docs/configuration.md",
                if name.is_empty() {
                    String::new()
                } else {
                    format!("{name}.")
                }
            );
        }
    }
    // The example itself, comments and all, is a valid configuration.
    let uncommented: String = example
        .lines()
        .map(|line| {
            let t = line.trim_start();
            match t.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(char::is_uppercase) => rest,
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Config::parse(&uncommented, Path::new("docs/configuration.md")).unwrap();
}

#[test]
fn admission_defaults_and_keys() {
    let defaults = parse("").unwrap().admission;
    assert_eq!(defaults, AdmissionConfig::default());
    assert!(defaults.enabled);
    assert_eq!(defaults.memory_ratio.get(), 1.0);
    assert_eq!(defaults.memory_reserve_bytes, validate::GIB);
    assert_eq!(defaults.vcpu_ratio.get(), 4.0);
    // A whole number is a ratio too.
    let a = parse("[admission]\nvcpu_ratio = 2").unwrap().admission;
    assert_eq!(a.vcpu_ratio.get(), 2.0);
    let a = parse(
        "[admission]\nenabled = false\nmemory_ratio = 1.5\nmemory_reserve = \"512M\"\n\
             vcpu_ratio = 2.0\n",
    )
    .unwrap()
    .admission;
    assert!(!a.enabled);
    assert_eq!(a.memory_ratio.get(), 1.5);
    assert_eq!(a.memory_reserve_bytes, 512 * validate::MIB);
    assert_eq!(a.vcpu_ratio.get(), 2.0);
    let a = parse("[admission]\nmemory_reserve = \"0\"")
        .unwrap()
        .admission;
    assert_eq!(a.memory_reserve_bytes, 0);
    assert_eq!(Ratio(1.0).to_string(), "1.0");
    assert_eq!(Ratio(0.75).to_string(), "0.75");
}

#[test]
fn admission_mistakes_name_the_key() {
    for (text, needle) in [
        (
            "[admission]\nmemory_ratio = 0.0",
            "`admission.memory_ratio`: 0 is not a number more than 0",
        ),
        (
            "[admission]\nvcpu_ratio = -1.0",
            "`admission.vcpu_ratio`: -1",
        ),
        (
            "[admission]\nvcpu_ratio = nan",
            "`admission.vcpu_ratio`: NaN",
        ),
        ("[admission]\nmemory_ratio = 5000.0", "at most 1000"),
        (
            "[admission]\nmemory_reserve = \"lots\"",
            "`admission.memory_reserve`",
        ),
        ("[admission]\nlimit = 3", "unknown field `limit`"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
        assert!(err.contains("config.toml"), "{err}");
    }
}

#[test]
fn dns_defaults_and_keys() {
    assert_eq!(parse("").unwrap().dns, DnsConfig::default());
    assert_eq!(DnsConfig::default().domain, "vm");
    let dns = parse("[dns]\nenabled = false\ndomain = \"vm.internal.\"\nfallback_port = 1053\n")
        .unwrap()
        .dns;
    assert_eq!(
        dns,
        DnsConfig {
            enabled: false,
            domain: "vm.internal".into(),
            fallback_port: 1053
        }
    );
}

#[test]
fn dns_mistakes_name_the_key() {
    for (text, needle) in [
        (
            "[dns]\ndomain = \"VM\"",
            "`dns.domain`: \"VM\" is not a domain",
        ),
        ("[dns]\ndomain = \"a..b\"", "is not a domain"),
        ("[dns]\ndomain = \"\"", "is not a domain"),
        ("[dns]\ndomain = \"-x\"", "is not a domain"),
        ("[dns]\ndomain = \"in-addr.arpa\"", "reverse-lookup"),
        ("[dns]\nfallback_port = 53", "`dns.fallback_port`: 53"),
        ("[dns]\nfallback_port = 70000", "`dns.fallback_port`: 70000"),
        ("[dns]\nport = 53", "unknown field `port`"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(needle), "{text}: {err}");
    }
}
