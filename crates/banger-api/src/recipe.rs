//! Image build recipes: what `banger image build` does to a temporary VM of a base image
//! before it becomes a new image. A recipe is a TOML file a user keeps in a repository
//! (docs/image-build.md documents every key); `POST /v1/images/build` takes the same structure as
//! JSON, its paths made absolute by the client. The rules live here so that the CLI refuses a
//! bad recipe before anything runs and bangerd refuses it again before anything is made.

use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validate;
use crate::{ApiError, ErrorCode};

/// What a build does, in this order: install `packages`, copy `file`s, place `download`s,
/// `run` scripts, set up `service`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The new image's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image to build on; bangerd's `default_image` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Debian packages to install (with what they depend on, without recommends). The host
    /// downloads them: the build VM needs no internet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Files copied in from the host.
    #[serde(default, rename = "file", skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RecipeFile>,
    /// Files the host downloads (checked against their SHA-256) and copies in.
    #[serde(default, rename = "download", skip_serializing_if = "Vec::is_empty")]
    pub downloads: Vec<RecipeDownload>,
    /// Shell scripts run as root in the guest, in order; a failing one fails the build.
    #[serde(default, rename = "run", skip_serializing_if = "Vec::is_empty")]
    pub run: Vec<RecipeRun>,
    /// Long-running services every VM of the image runs and a start waits for.
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<RecipeService>,
    /// Guest ports every VM of the image publishes on the host's loopback by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<u16>,
    /// The build VM gets NAT, so that `run` scripts may fetch from the internet themselves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat: bool,
    /// The build VM's writable root space (what the build may add), e.g. `"4G"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The build VM's memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u32>,
}

/// One file copied from the host into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// The file on the host; in a recipe file, relative to the recipe's directory.
    pub src: String,
    /// Its absolute path in the guest. A path under `/root` lands in the image's work seed,
    /// which every new VM's `/root` starts from.
    pub dest: String,
    /// Octal permission bits, e.g. `"0755"`; the source file's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One file the host downloads for the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeDownload {
    /// `https://` or `http://`.
    pub url: String,
    /// The file's SHA-256, hex: a download that does not match fails the build.
    pub sha256: String,
    /// Its absolute path in the guest.
    pub dest: String,
    /// Octal permission bits; `"0644"` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One script run in the guest: a file from the host, or a command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeRun {
    /// A script on the host (run with `sh` unless it starts with `#!`); in a recipe file,
    /// relative to the recipe's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// A shell command line, run with `sh -ec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// A service every VM of the image runs (supervised by the guest's init, restarted when it
/// exits) and a start waits for, on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipeService {
    /// A name (a-z, 0-9, '-'), not `agent` or `ssh`.
    pub name: String,
    /// The TCP port it listens on (not 22 or 1024, banger's own).
    pub port: u16,
    /// The command line that runs it in the foreground, as root in `/root`.
    pub command: String,
    /// How long a start waits for it at most, e.g. `"3m"`; bangerd's `ready_timeout` when
    /// that is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Publish the port on the host's loopback for every VM of the image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish: bool,
    /// An HTTP path (`"/"`, `"/health"`): the service is ready only once a `GET` of it
    /// answers, for servers that accept connections before they can serve them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// `POST /v1/images/build`: build a new image from a recipe, as an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildImageRequest {
    /// The recipe; every host path absolute, and `name` present.
    pub recipe: Recipe,
    /// Build even when the cache holds an image of the same inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_cache: Option<bool>,
    /// Only download what the build needs into the cache (packages, files), boot nothing and
    /// make no image: a later build of the same recipe then needs no network at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_only: Option<bool>,
    /// When an image of the recipe's name exists, the new image takes its name: the old one
    /// is retired (renamed, and kept while VMs or snapshots use it). By default an existing
    /// name is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
}

/// Where the build's memory defaults come from when the recipe sets none.
pub const DEFAULT_BUILD_MEMORY_MIB: u32 = 1024;
/// The build VM's writable root space when the recipe sets none.
pub const DEFAULT_BUILD_DISK: &str = "4G";

fn bad(message: String, hint: &str) -> ApiError {
    ApiError::invalid(message).with_hint(hint.to_owned())
}

/// The recipes built into banger, by name: `banger image build --builtin NAME` and the web
/// console's build form offer them. Their host paths are absolute (they have none).
pub const BUILTIN: &[(&str, &str)] =
    &[("opencode", include_str!("../../../recipes/opencode.toml"))];

/// The text of the built-in recipe `name`, or an error listing those there are.
pub fn builtin(name: &str) -> Result<&'static str, ApiError> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| {
            ApiError::invalid(format!("no built-in recipe {name:?}")).with_hint(format!(
                "built-in recipes: {}",
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

impl Recipe {
    /// Parses a recipe's text as it is, host paths untouched.
    pub fn parse(text: &str) -> Result<Recipe, ApiError> {
        toml::from_str(text).map_err(|e| {
            bad(
                format!("the recipe is not valid: {}", e.to_string().trim_end()),
                "docs/image-build.md lists every key a recipe may have",
            )
        })
    }

    /// The host paths (`file.src`, `run.script`) that are not absolute, each with the key
    /// that holds it (`file src`, `run script`).
    pub fn relative_host_paths(&self) -> Vec<(&'static str, &str)> {
        let files = self.files.iter().map(|f| ("file src", f.src.as_str()));
        let scripts = self
            .run
            .iter()
            .filter_map(|r| r.script.as_deref())
            .map(|s| ("run script", s));
        files
            .chain(scripts)
            .filter(|(_, p)| !Path::new(p).is_absolute())
            .collect()
    }

    /// Parses a recipe file's text. Host paths (`file.src`, `run.script`) are made absolute
    /// against `dir`, the recipe's directory.
    pub fn from_toml(text: &str, dir: &Path) -> Result<Recipe, ApiError> {
        let mut recipe = Recipe::parse(text)?;
        let absolute = |p: &str| -> String {
            let path = Path::new(p);
            if path.is_absolute() {
                p.to_owned()
            } else {
                dir.join(path).display().to_string()
            }
        };
        for file in &mut recipe.files {
            file.src = absolute(&file.src);
        }
        for run in &mut recipe.run {
            if let Some(script) = &run.script {
                run.script = Some(absolute(script));
            }
        }
        Ok(recipe)
    }

    /// Checks everything that can be checked without the host's files: names, guest paths,
    /// modes, hashes, URLs, services, sizes. Host paths must be absolute.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(name) = &self.name {
            validate::name("image", name)?;
        }
        if let Some(base) = &self.base {
            validate::name("base image", base)?;
        }
        for package in &self.packages {
            check_package(package)?;
        }
        for file in &self.files {
            host_path("file src", &file.src)?;
            guest_path("file dest", &file.dest)?;
            if let Some(mode) = &file.mode {
                parse_mode(mode)?;
            }
        }
        for download in &self.downloads {
            if !(download.url.starts_with("https://") || download.url.starts_with("http://"))
                || download.url.contains(char::is_whitespace)
            {
                return Err(bad(
                    format!("download url {:?} is not an http(s) URL", download.url),
                    "give the file's full https:// address",
                ));
            }
            if download.sha256.len() != 64
                || !download.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad(
                    format!(
                        "download {}: sha256 {:?} is not 64 hexadecimal digits",
                        download.url, download.sha256
                    ),
                    "compute it with `sha256sum FILE` on a copy you trust",
                ));
            }
            guest_path("download dest", &download.dest)?;
            if let Some(mode) = &download.mode {
                parse_mode(mode)?;
            }
        }
        for (i, run) in self.run.iter().enumerate() {
            match (&run.script, &run.command) {
                (Some(script), None) => host_path("run script", script)?,
                (None, Some(command)) if !command.trim().is_empty() => {}
                _ => {
                    return Err(bad(
                        format!(
                            "run #{}: give exactly one of `script` (a file) or `command` (a command line)",
                            i + 1
                        ),
                        "e.g. [[run]] script = \"setup.sh\"",
                    ));
                }
            }
        }
        let mut names: Vec<&str> = Vec::new();
        for service in &self.services {
            check_service(&service.name, service.port)?;
            if names.contains(&service.name.as_str()) {
                return Err(bad(
                    format!("service {:?} is declared twice", service.name),
                    "give each service its own name",
                ));
            }
            names.push(&service.name);
            if service.command.trim().is_empty() {
                return Err(bad(
                    format!("service {:?} has no command", service.name),
                    "command = \"the program and its arguments, in the foreground\"",
                ));
            }
            if let Some(timeout) = &service.timeout {
                service_timeout(timeout)?;
            }
            if let Some(path) = &service.http
                && !(path.starts_with('/')
                    && path.len() <= 256
                    && path.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(bad(
                    format!(
                        "service {}: http path {path:?} must start with / and have no spaces",
                        service.name
                    ),
                    "e.g. http = \"/health\"",
                ));
            }
        }
        for port in &self.publish {
            if *port == 0 {
                return Err(bad(
                    "publish: port 0 is not a port".into(),
                    "publish guest ports 1-65535",
                ));
            }
        }
        if let Some(disk) = &self.disk {
            let bytes = validate::parse_size(disk)?;
            validate::disk_bytes(
                "disk",
                i64::try_from(bytes).unwrap_or(i64::MAX),
                validate::MIN_DISK_BYTES,
            )?;
        }
        if let Some(memory) = self.memory_mib {
            validate::memory_mib(i64::from(memory))?;
        }
        Ok(())
    }

    /// The guest ports the image publishes: `publish` and every service that asks.
    pub fn published_ports(&self) -> Vec<u16> {
        let mut ports = self.publish.clone();
        for service in self.services.iter().filter(|s| s.publish) {
            if !ports.contains(&service.port) {
                ports.push(service.port);
            }
        }
        ports
    }
}

/// A Debian package name (`name`, optionally `name=version`).
fn check_package(package: &str) -> Result<(), ApiError> {
    let name = package.split('=').next().unwrap_or_default();
    let ok = name.len() >= 2
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok && !package.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(bad(
            format!("{package:?} is not a Debian package name"),
            "package names are lower-case letters, digits and + - . (e.g. build-essential)",
        ))
    }
}

/// A service's name and port, by the one rule images follow ([`crate::service::check`]).
pub fn check_service(name: &str, port: u16) -> Result<(), ApiError> {
    crate::service::check(name, port).map_err(ApiError::invalid)
}

/// A service's readiness timeout, `"90s"`, `"3m"`: whole seconds, at most a day.
pub fn service_timeout(text: &str) -> Result<u64, ApiError> {
    let parsed = humantime::parse_duration(text).map_err(|e| {
        bad(
            format!("service timeout {text:?}: {e}"),
            "write a duration such as \"90s\" or \"3m\"",
        )
    })?;
    let secs = parsed.as_secs();
    if secs == 0 || secs > 86_400 {
        return Err(bad(
            format!("service timeout {text:?} is not between 1 s and a day"),
            "write a duration such as \"90s\" or \"3m\"",
        ));
    }
    Ok(secs)
}

/// Octal permission bits, `"0755"`.
pub fn parse_mode(text: &str) -> Result<u32, ApiError> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            bad(
                format!("mode {text:?} is not octal permission bits"),
                "write it like \"0644\" or \"0755\"",
            )
        })
}

fn host_path(what: &str, path: &str) -> Result<(), ApiError> {
    if Path::new(path).is_absolute() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("{what} {path:?} is not an absolute path"),
        )
        .with_hint("paths sent to bangerd are absolute; `banger image build` resolves a recipe's relative paths against its directory"))
    }
}

/// An absolute guest path without `.` or `..`, not `/` itself.
fn guest_path(what: &str, path: &str) -> Result<(), ApiError> {
    let p = Path::new(path);
    let normal = p.is_absolute()
        && p.components().skip(1).count() > 0
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && !path.ends_with('/');
    if normal {
        Ok(())
    } else {
        Err(bad(
            format!("{what} {path:?} is not an absolute path to a file in the guest"),
            "write the full path of the file, e.g. /usr/local/bin/tool (no `..`, no trailing /)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "dev"
base = "debian"
packages = ["git", "build-essential", "libc6=2.36-9"]
publish = [8080]
disk = "4G"
memory_mib = 2048

[[file]]
src = "files/motd"
dest = "/etc/motd"
mode = "0644"

[[download]]
url = "https://example.com/tool.tgz"
sha256 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
dest = "/opt/tool.tgz"

[[run]]
script = "setup.sh"

[[run]]
command = "echo hi > /etc/hi"

[[service]]
name = "web"
port = 4096
command = "python3 -m http.server 4096"
timeout = "3m"
publish = true
http = "/"
"#;

    #[test]
    fn a_full_recipe_parses_with_paths_made_absolute() {
        let recipe = Recipe::from_toml(FULL, Path::new("/src/project")).unwrap();
        recipe.check().unwrap();
        assert_eq!(recipe.files[0].src, "/src/project/files/motd");
        assert_eq!(
            recipe.run[0].script.as_deref(),
            Some("/src/project/setup.sh")
        );
        assert_eq!(recipe.run[1].command.as_deref(), Some("echo hi > /etc/hi"));
        assert_eq!(recipe.services[0].port, 4096);
        assert_eq!(recipe.published_ports(), [8080, 4096]);
        assert_eq!(service_timeout("3m").unwrap(), 180);
        // The JSON form round-trips.
        let json = serde_json::to_string(&recipe).unwrap();
        assert_eq!(serde_json::from_str::<Recipe>(&json).unwrap(), recipe);
    }

    #[test]
    fn every_builtin_recipe_parses_and_checks_with_no_host_paths() {
        for (name, text) in BUILTIN {
            let recipe = Recipe::parse(text).unwrap();
            recipe.check().unwrap();
            assert_eq!(recipe.name.as_deref(), Some(*name));
            assert!(recipe.relative_host_paths().is_empty(), "{name}");
            assert_eq!(builtin(name).unwrap(), *text);
        }
        let e = builtin("nope").unwrap_err();
        assert!(e.message.contains("no built-in recipe \"nope\""));
        assert_eq!(e.hint.as_deref(), Some("built-in recipes: opencode"));
    }

    #[test]
    fn parse_keeps_host_paths_as_written() {
        let recipe = Recipe::parse(FULL).unwrap();
        assert_eq!(recipe.files[0].src, "files/motd");
        assert_eq!(
            recipe.relative_host_paths(),
            [("file src", "files/motd"), ("run script", "setup.sh")]
        );
        let absolute = Recipe::from_toml(FULL, Path::new("/src")).unwrap();
        assert!(absolute.relative_host_paths().is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| {
            Recipe::from_toml(text, Path::new("/r"))
                .and_then(|r| r.check())
                .unwrap_err()
                .message
        };
        assert!(err("pakages = [\"git\"]").contains("unknown field `pakages`"));
        assert!(err("packages = [\"Git\"]").contains("not a Debian package name"));
        assert!(err("[[file]]\nsrc = \"a\"\ndest = \"etc/motd\"").contains("file dest"));
        assert!(err("[[file]]\nsrc = \"a\"\ndest = \"/etc/../motd\"").contains("file dest"));
        assert!(err("[[file]]\nsrc = \"a\"\ndest = \"/etc/motd\"\nmode = \"9\"").contains("mode"));
        assert!(
            err("[[download]]\nurl = \"ftp://x\"\nsha256 = \"00\"\ndest = \"/x\"")
                .contains("not an http(s) URL")
        );
        assert!(
            err("[[download]]\nurl = \"https://x\"\nsha256 = \"00\"\ndest = \"/x\"")
                .contains("64 hexadecimal")
        );
        assert!(err("[[run]]\n").contains("exactly one of"));
        assert!(err("[[run]]\nscript = \"a\"\ncommand = \"b\"").contains("exactly one of"));
        assert!(
            err("[[service]]\nname = \"ssh\"\nport = 2222\ncommand = \"x\"")
                .contains("banger's own")
        );
        assert!(
            err("[[service]]\nname = \"web\"\nport = 1024\ncommand = \"x\"")
                .contains("which is the guest agent's")
        );
        assert!(
            err("[[service]]\nname = \"web\"\nport = 80\ncommand = \"x\"\ntimeout = \"soon\"")
                .contains("service timeout")
        );
        assert!(
            err("[[service]]\nname = \"web\"\nport = 80\ncommand = \"x\"\nhttp = \"health\"")
                .contains("http path")
        );
        assert!(err("name = \"Dev\"").contains("lower-case"));
        assert!(err("disk = \"1K\"").contains("disk"));
        let relative = Recipe {
            files: vec![RecipeFile {
                src: "relative".into(),
                dest: "/x".into(),
                mode: None,
            }],
            ..Recipe::default()
        };
        assert!(relative.check().unwrap_err().message.contains("absolute"));
    }
}
