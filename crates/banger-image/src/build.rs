//! The host's half of `banger image build`: what the build VM is handed rather than fetching
//! itself, so that a build works where the guest cannot reach the internet.
//!
//! - *Packages*: the host's apt, in a directory of its own under the cache (its own sources
//!   for the image's suite, signed by Debian's archive keyring, its own lists), resolves the
//!   recipe's packages against the **base image's** package state (its `var/lib/dpkg/status`,
//!   read off its root filesystem with `debugfs`) and downloads exactly the `.deb` files the
//!   image lacks. The guest installs them with its own apt, from those files alone.
//! - *Downloads*: `curl` into the cache, kept under their SHA-256, which must match the
//!   recipe's.
//! - *The cache key* of a build: the base image, the recipe and the contents of every host
//!   file it names, so the same inputs give the same key.

use std::io::Read;
use std::path::{Path, PathBuf};

use banger_api::{Image, Recipe};
use banger_host::ext4::Debugfs;
use banger_host::{CommandRunner, CommandSpec, RunError};
use sha2::{Digest, Sha256};

use crate::bootstrap::{ARCH, DEFAULT_MIRROR, debian};
use crate::register::ROOTFS_FILE;

/// Debian's archive keyring on a Debian host: what signs the sources the host's apt reads.
pub const ARCHIVE_KEYRING: &str = banger_host::doctor::DEBIAN_ARCHIVE_KEYRING;
/// How long downloaded package lists are used without asking the mirror again.
pub const LISTS_FRESH: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// Bumped when the build cache's layout or a build's steps change what a key stands for.
const CACHE_FORMAT: &str = "1";

/// A host-side build step failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the build was cancelled")]
    Cancelled,

    #[error("{step} failed")]
    Command {
        step: &'static str,
        #[source]
        source: RunError,
    },

    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{url} does not have the recipe's SHA-256: expected {expected}, got {actual}")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },

    #[error("packages can only be installed on a Debian base image; {image} is {distro}")]
    NotDebian { image: String, distro: String },

    #[error("apt found nothing to install for {0:?} that the base image lacks, nor the packages")]
    Unresolved(Vec<String>),
}

impl BuildError {
    /// What the user can do about it, where there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::Command {
                source: RunError::NotFound { program },
                ..
            } => Some(match program.as_str() {
                "apt-get" => "building with packages needs a Debian host with apt".to_owned(),
                "curl" => "install it: apt-get install curl".to_owned(),
                other => format!("install {other}"),
            }),
            BuildError::Command {
                step,
                source: RunError::Failed { .. },
            } => Some(if step.contains("apt") {
                "check the package names (`apt-cache policy NAME` on a Debian host) and that the host reaches the Debian mirror"
            } else {
                "check the URL, and that the host reaches it"
            }
            .to_owned()),
            BuildError::Checksum { .. } => Some(
                "the file at the URL changed, or the recipe's sha256 is wrong: check it with sha256sum"
                    .to_owned(),
            ),
            BuildError::NotDebian { .. } => Some(
                "build on a Debian image (`banger image bootstrap debian`), or install software with [[download]] and [[run]]"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// For a host command that failed: the step and the last lines it wrote to stderr, which
    /// say why (apt's or curl's own words) where the whole chain would bury them.
    pub fn failed_command(&self) -> Option<String> {
        let BuildError::Command {
            step,
            source: RunError::Failed { stderr, .. },
        } = self
        else {
            return None;
        };
        let last: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = last.into_iter().rev().collect();
        Some(format!("{step} failed: {}", tail.join("\n")))
    }
}

fn run(
    runner: &dyn CommandRunner,
    cancelled: &dyn Fn() -> bool,
    step: &'static str,
    cmd: CommandSpec,
) -> Result<String, BuildError> {
    match runner.run_cancellable(&cmd, cancelled) {
        Ok(out) => Ok(out.stdout_lossy()),
        Err(RunError::Cancelled { .. }) => Err(BuildError::Cancelled),
        Err(source) => Err(BuildError::Command { step, source }),
    }
}

/// The base image's `var/lib/dpkg/status`, read off its root filesystem.
pub fn base_dpkg_status(
    runner: &dyn CommandRunner,
    image_dir: &Path,
) -> Result<String, BuildError> {
    run(
        runner,
        &|| false,
        "reading the base image's package state (debugfs)",
        Debugfs::cat(&image_dir.join(ROOTFS_FILE), "/var/lib/dpkg/status").command(),
    )
}

/// The host's apt, set up for one Debian suite under the cache.
pub struct Apt<'a> {
    pub runner: &'a dyn CommandRunner,
    /// `<cache>/apt-<suite>`.
    pub root: PathBuf,
    pub suite: String,
    pub mirror: String,
}

/// One package apt would install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPackage {
    pub name: String,
    pub version: String,
}

impl<'a> Apt<'a> {
    /// apt for the suite of `base`, under `cache_dir`.
    pub fn for_image(
        runner: &'a dyn CommandRunner,
        cache_dir: &Path,
        base: &Image,
    ) -> Result<Apt<'a>, BuildError> {
        let distro = base.manifest.distro.clone().unwrap_or_default();
        let suite = base.manifest.suite.clone().unwrap_or_default();
        if distro != "debian" || suite.is_empty() {
            return Err(BuildError::NotDebian {
                image: base.name.clone(),
                distro: if distro.is_empty() {
                    "of an unknown distribution".to_owned()
                } else {
                    distro
                },
            });
        }
        Ok(Apt {
            runner,
            root: cache_dir.join(format!("apt-{suite}")),
            suite,
            mirror: DEFAULT_MIRROR.to_owned(),
        })
    }

    fn options(&self) -> Vec<String> {
        let root = self.root.display();
        [
            format!("Dir={root}"),
            format!("Dir::State::status={root}/var/lib/dpkg/status"),
            "Dir::Etc::sourceparts=-".to_owned(),
            "Dir::Etc::preferencesparts=-".to_owned(),
            "Dir::Etc::parts=-".to_owned(),
            format!("APT::Architecture={ARCH}"),
            "APT::Install-Recommends=false".to_owned(),
            "Acquire::Languages=none".to_owned(),
            "Debug::NoLocking=true".to_owned(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_owned(), o])
        .collect()
    }

    fn command(&self, args: &[&str]) -> CommandSpec {
        CommandSpec::new("apt-get")
            .args(self.options())
            .args(args.iter().copied())
    }

    /// Writes the sources and the base image's package state, and updates the lists.
    pub fn prepare(&self, status: &str, cancelled: &dyn Fn() -> bool) -> Result<(), BuildError> {
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BuildError::Io { what, path, source }
        };
        for dir in [
            "etc/apt",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
        ] {
            let path = self.root.join(dir);
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
        let security = self.mirror.trim_end_matches('/').to_owned() + "-security";
        let sources = format!(
            "deb [signed-by={ARCHIVE_KEYRING}] {m} {s} main\n\
             deb [signed-by={ARCHIVE_KEYRING}] {m} {s}-updates main\n\
             deb [signed-by={ARCHIVE_KEYRING}] {security} {s}-security main\n",
            m = self.mirror,
            s = self.suite
        );
        let path = self.root.join("etc/apt/sources.list");
        std::fs::write(&path, sources).map_err(io("write", &path))?;
        let path = self.root.join("var/lib/dpkg/status");
        std::fs::write(&path, status).map_err(io("write", &path))?;
        // Lists younger than LISTS_FRESH are used as they are: builds in a row do not ask the
        // mirror again, and a build whose packages were downloaded before needs no network.
        let marker = self.root.join("var/lib/apt/lists/.banger-updated");
        let fresh = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < LISTS_FRESH);
        if !fresh {
            run(
                self.runner,
                cancelled,
                "updating the package lists (apt-get update)",
                self.command(&["-q", "update"]),
            )?;
            std::fs::write(&marker, b"").map_err(io("write", &marker))?;
        }
        Ok(())
    }

    /// What installing `packages` on the base image takes, dependencies included.
    pub fn plan(
        &self,
        packages: &[String],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<PlannedPackage>, BuildError> {
        let mut args = vec!["-s", "-y", "install"];
        args.extend(packages.iter().map(String::as_str));
        let out = run(
            self.runner,
            cancelled,
            "resolving the packages (apt-get install -s)",
            self.command(&args),
        )?;
        Ok(parse_simulation(&out))
    }

    /// Downloads the planned packages; their `.deb` files, in plan order.
    pub fn download(
        &self,
        packages: &[String],
        plan: &[PlannedPackage],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let mut args = vec!["-y", "--download-only", "install"];
        args.extend(packages.iter().map(String::as_str));
        run(
            self.runner,
            cancelled,
            "downloading the packages (apt-get install --download-only)",
            self.command(&args),
        )?;
        let archives = self.root.join("var/cache/apt/archives");
        plan.iter()
            .map(|p| {
                let found = ["amd64", "all"]
                    .iter()
                    .map(|arch| archives.join(debian::deb_file_name(&p.name, &p.version, arch)))
                    .find(|path| path.is_file());
                found.ok_or_else(|| BuildError::Io {
                    what: "find the downloaded package",
                    path: archives.join(debian::deb_file_name(&p.name, &p.version, ARCH)),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })
            })
            .collect()
    }
}

/// The headers package of the base image's kernel, when the packages planned need it: DKMS
/// (`dkms` itself or a `-dkms` package) builds modules for the running kernel, which in a build
/// VM is the image's own, from `/lib/modules/RELEASE/build`, and only that kernel's headers
/// package provides it. `None` when nothing planned uses DKMS, when the recipe names a headers
/// package itself, or when the image's kernel release is not known.
pub fn kernel_headers_needed(
    requested: &[String],
    plan: &[PlannedPackage],
    kernel_release: Option<&str>,
) -> Option<String> {
    let dkms = plan
        .iter()
        .any(|p| p.name == "dkms" || p.name.ends_with("-dkms"));
    let named = requested.iter().any(|p| p.starts_with("linux-headers-"));
    match kernel_release {
        Some(release) if dkms && !named && !release.is_empty() => {
            Some(format!("linux-headers-{release}"))
        }
        _ => None,
    }
}

/// The `Inst NAME [OLD] (VERSION ...)` lines of `apt-get -s install`.
pub fn parse_simulation(text: &str) -> Vec<PlannedPackage> {
    text.lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|rest| {
            let name = rest.split_whitespace().next()?.to_owned();
            let version = rest
                .split_once('(')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(PlannedPackage { name, version })
        })
        .collect()
}

/// Downloads `url` into `<cache_dir>/downloads/<sha256>` unless it is there; the file.
pub fn download(
    runner: &dyn CommandRunner,
    cache_dir: &Path,
    url: &str,
    sha256: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<(PathBuf, bool), BuildError> {
    let dir = cache_dir.join("downloads");
    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
        what: "create",
        path: dir.clone(),
        source,
    })?;
    let sha256 = sha256.to_ascii_lowercase();
    let path = dir.join(&sha256);
    if path.is_file() && file_sha256(&path)? == sha256 {
        return Ok((path, true));
    }
    let partial = dir.join(format!(".{sha256}.partial"));
    let fetched = run(
        runner,
        cancelled,
        "downloading a file (curl)",
        CommandSpec::new("curl").args([
            "-fsSL".to_owned(),
            "--retry".to_owned(),
            "2".to_owned(),
            "-o".to_owned(),
            partial.display().to_string(),
            "--".to_owned(),
            url.to_owned(),
        ]),
    )
    .and_then(|_| file_sha256(&partial));
    let actual = match fetched {
        Ok(actual) => actual,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    if actual != sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(BuildError::Checksum {
            url: url.to_owned(),
            expected: sha256,
            actual,
        });
    }
    std::fs::rename(&partial, &path).map_err(|source| BuildError::Io {
        what: "keep the download as",
        path: path.clone(),
        source,
    })?;
    Ok((path, false))
}

/// The SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, BuildError> {
    let mut file = std::fs::File::open(path).map_err(|source| BuildError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|source| BuildError::Io {
            what: "read",
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Keeps the finished builds in the cache directory `dir` within `max_bytes` (allocated bytes
/// on disk): the entries used longest ago (their modification time, which a cache hit
/// renews: [`touch_cache_entry`]) are removed first, never `keep` (the entry just written).
/// Returns the entries removed. Other files (the apt state, downloads) are not entries.
pub fn prune_cache(dir: &Path, max_bytes: u64, keep: &Path) -> std::io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let is_archive = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(crate::archive::SUFFIX));
        let meta = entry.metadata()?;
        if is_archive && meta.is_file() {
            entries.push((meta.modified()?, meta.blocks() * 512, path));
        }
    }
    let mut total: u64 = entries.iter().map(|(_, bytes, _)| bytes).sum();
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
    let mut removed = Vec::new();
    for (_, bytes, path) in entries {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            // Another daemon sharing the cache removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        total = total.saturating_sub(bytes);
        removed.push(path);
    }
    Ok(removed)
}

/// Marks a cache entry as just used, so that [`prune_cache`] keeps it over older ones.
pub fn touch_cache_entry(path: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

/// The key of a build's inputs: the base image (its id and manifest time), the recipe
/// (without its name: the same build under another name is the same build) and the contents
/// of every host file it names. `guest` names what banger puts in the guest (its version).
pub fn cache_key(base: &Image, recipe: &Recipe, guest: &str) -> Result<String, BuildError> {
    let mut hasher = Sha256::new();
    let mut add = |label: &str, value: &[u8]| {
        hasher.update(label.as_bytes());
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value);
    };
    add("format", CACHE_FORMAT.as_bytes());
    add("guest", guest.as_bytes());
    add("base", base.id.as_bytes());
    add(
        "base-created",
        base.manifest.created_at.to_string().as_bytes(),
    );
    let mut unnamed = recipe.clone();
    unnamed.name = None;
    let json = serde_json::to_vec(&unnamed).unwrap_or_default();
    add("recipe", &json);
    let hosts = recipe
        .files
        .iter()
        .map(|f| f.src.as_str())
        .chain(recipe.run.iter().filter_map(|r| r.script.as_deref()));
    for path in hosts {
        let digest = file_sha256(Path::new(path))?;
        add("file", format!("{path}:{digest}").as_bytes());
    }
    Ok(hasher
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What one entry of a provisioning archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntrySource {
    /// A host file, streamed.
    File(PathBuf),
    /// Contents made by banger (a service's script, the runner).
    Bytes(Vec<u8>),
}

/// One file handed to the guest: where it goes (an absolute guest path) and its mode (the
/// host file's when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub source: EntrySource,
    pub dest: String,
    pub mode: Option<u32>,
}

/// Writes `entries` as a tar archive at `out`, to be extracted at the guest's `/` by its
/// agent: paths relative to `/`, owned by root. There are no directory entries: the
/// extraction makes missing parents, and an entry would reset an existing directory's mode
/// (`/tmp`, `/root`).
pub fn write_archive(entries: &[ArchiveEntry], out: &Path) -> Result<u64, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io { what, path, source }
    };
    let file = std::fs::File::create(out).map_err(io("create", out))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for entry in entries {
        let relative = entry.dest.trim_start_matches('/');
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        match &entry.source {
            EntrySource::File(path) => {
                let file = std::fs::File::open(path).map_err(io("read", path))?;
                let meta = file.metadata().map_err(io("read", path))?;
                header.set_size(meta.len());
                header.set_mode(entry.mode.unwrap_or(meta.permissions().mode() & 0o7777));
                builder
                    .append_data(&mut header, relative, file)
                    .map_err(io("write", out))?;
            }
            EntrySource::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_mode(entry.mode.unwrap_or(0o644));
                builder
                    .append_data(&mut header, relative, bytes.as_slice())
                    .map_err(io("write", out))?;
            }
        }
    }
    let mut writer = builder.into_inner().map_err(io("write", out))?;
    std::io::Write::flush(&mut writer).map_err(io("write", out))?;
    std::fs::metadata(out)
        .map(|m| m.len())
        .map_err(io("stat", out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dkms_brings_the_headers_of_the_images_kernel() {
        use super::{PlannedPackage, kernel_headers_needed};
        let planned = |names: &[&str]| -> Vec<PlannedPackage> {
            names
                .iter()
                .map(|n| PlannedPackage {
                    name: (*n).to_owned(),
                    version: "1".to_owned(),
                })
                .collect()
        };
        let asked =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| (*n).to_owned()).collect() };
        let release = Some("6.1.0-57-cloud-amd64");
        let headers = Some("linux-headers-6.1.0-57-cloud-amd64".to_owned());
        // A -dkms package, whether dkms comes with it or the base has it already.
        assert_eq!(
            kernel_headers_needed(
                &asked(&["acpi-call-dkms"]),
                &planned(&["dkms", "acpi-call-dkms"]),
                release
            ),
            headers
        );
        assert_eq!(
            kernel_headers_needed(
                &asked(&["acpi-call-dkms"]),
                &planned(&["acpi-call-dkms"]),
                release
            ),
            headers
        );
        assert_eq!(
            kernel_headers_needed(&asked(&["dkms"]), &planned(&["gcc-12", "dkms"]), release),
            headers
        );
        // Nothing for DKMS, headers named by the recipe, or an unknown kernel: nothing added.
        assert_eq!(
            kernel_headers_needed(&asked(&["jq"]), &planned(&["jq", "libjq1"]), release),
            None
        );
        assert_eq!(
            kernel_headers_needed(
                &asked(&["dkms", "linux-headers-amd64"]),
                &planned(&["dkms", "linux-headers-amd64"]),
                release
            ),
            None
        );
        assert_eq!(
            kernel_headers_needed(&asked(&["dkms"]), &planned(&["dkms"]), None),
            None
        );
    }

    #[test]
    fn the_cache_keeps_its_most_recently_used_entries_within_its_limit() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let entry = |name: &str, kib: usize, age_secs: u64| {
            let path = dir.path().join(format!("{name}{}", crate::archive::SUFFIX));
            std::fs::write(&path, vec![1u8; kib * 1024]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(age_secs))
                .unwrap();
            path
        };
        let oldest = entry("a", 64, 300);
        let old = entry("b", 64, 200);
        let used = entry("c", 64, 400);
        let newest = entry("d", 64, 0);
        // Not entries: the apt state and downloads live beside them.
        std::fs::create_dir(dir.path().join("apt-bookworm")).unwrap();
        std::fs::write(dir.path().join("downloads"), vec![0u8; 512 * 1024]).unwrap();
        // A hit makes the oldest entry the most recently used.
        super::touch_cache_entry(&used).unwrap();

        // Room for two: the two used longest ago go, the one just written never does.
        let removed = super::prune_cache(dir.path(), 2 * 64 * 1024 + 8192, &newest).unwrap();
        assert_eq!(removed, [oldest.clone(), old.clone()]);
        assert!(used.exists() && newest.exists() && !oldest.exists() && !old.exists());
        assert!(dir.path().join("downloads").exists());

        // A limit below the entry just written keeps that entry alone.
        let removed = super::prune_cache(dir.path(), 0, &newest).unwrap();
        assert_eq!(removed, [used]);
        assert!(newest.exists());
    }

    use super::*;

    #[test]
    fn the_simulation_names_each_package_and_version() {
        let text = "Reading package lists...\n\
            Inst libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])\n\
            Inst libjq1 [1.6-2] (1.6-2.1+deb12u3 Debian-Security:12/oldstable-security [amd64])\n\
            Conf libonig5 (6.9.8-1 Debian:12.15/oldstable [amd64])\n\
            Inst tzdata (2024a-0+deb12u1 Debian:12.15/oldstable [all])\n";
        assert_eq!(
            parse_simulation(text),
            [
                PlannedPackage {
                    name: "libonig5".into(),
                    version: "6.9.8-1".into()
                },
                PlannedPackage {
                    name: "libjq1".into(),
                    version: "1.6-2.1+deb12u3".into()
                },
                PlannedPackage {
                    name: "tzdata".into(),
                    version: "2024a-0+deb12u1".into()
                },
            ]
        );
    }
}
