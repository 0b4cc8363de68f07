//! Registration: adopting a kernel, an optional initrd and an ext4 root filesystem as a banger
//! image. The image store takes its own copy of every file (a reflink when the filesystem can,
//! a sparse copy otherwise) so later changes to the sources cannot break the image.
//!
//! Layout of `images/<id>/`: `vmlinux`, `initrd` (optional), `rootfs.ext4`, `manifest.json`.
//! The directory is created by [`install`] and removed again, whole, when any step fails or
//! the caller cancels: a failed registration leaves no byte behind.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use banger_api::{
    Image, ImageFile, ImageFiles, ImageManifest, ImageSource, ServiceCheck, Timestamp,
};
use banger_host::CommandRunner;
use banger_host::disk::{CopyError, CopyMethod};
use banger_host::ext4::Debugfs;

use crate::bootstrap::guest;
use crate::format;

pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initrd";
pub const ROOTFS_FILE: &str = "rootfs.ext4";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Stage names, in order, as an operation reports them.
pub const STAGES: [&str; 4] = [
    "copy kernel",
    "copy initrd",
    "copy rootfs",
    "write manifest",
];

/// A registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{role} path {path:?} is not absolute")]
    NotAbsolute { role: &'static str, path: String },

    /// A source file is not what its role needs (an ELF kernel, an ext4 root, a known initrd).
    #[error(transparent)]
    Format(#[from] format::FormatError),

    #[error(transparent)]
    Initrd(#[from] crate::initramfs::InitramfsError),

    #[error("copying {} into the image store failed", path.display())]
    Copy {
        path: PathBuf,
        #[source]
        source: CopyError,
    },

    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot encode the manifest")]
    Manifest(#[from] serde_json::Error),

    #[error("the registration was cancelled")]
    Cancelled,
}

impl RegisterError {
    /// What the user can do about it, where there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegisterError::NotAbsolute { .. } => {
                Some("bangerd runs in another directory; pass absolute paths".to_owned())
            }
            RegisterError::Format(e) => e.hint(),
            _ => None,
        }
    }

    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegisterError {
        let what = what.into();
        move |source| RegisterError::Io { what, source }
    }
}

/// Source files that passed the format checks.
#[derive(Debug, Clone)]
pub struct CheckedSources {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub kernel_version: Option<String>,
    /// What the root's init keeps running that a start waits for ([`services_in_rootfs`]).
    pub services: Vec<ServiceCheck>,
    /// Guest ports the image's VMs publish by default.
    pub publish: Vec<u16>,
}

/// Checks the files a user hands to `image register`: absolute paths, the kernel an ELF
/// vmlinux, the rootfs an ext4 image, the initrd a known archive format.
pub fn check_sources(
    kernel: &str,
    initrd: Option<&str>,
    rootfs: &str,
) -> Result<CheckedSources, RegisterError> {
    let absolute = |role: &'static str, path: &str| -> Result<PathBuf, RegisterError> {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(RegisterError::NotAbsolute {
                role,
                path: path.to_owned(),
            })
        }
    };
    let kernel = absolute("kernel", kernel)?;
    let rootfs = absolute("rootfs", rootfs)?;
    let initrd = initrd.map(|p| absolute("initrd", p)).transpose()?;
    let info = format::check_kernel(&kernel)?;
    format::check_rootfs(&rootfs)?;
    if let Some(initrd) = &initrd {
        format::check_initrd(initrd)?;
    }
    Ok(CheckedSources {
        kernel,
        initrd,
        rootfs,
        kernel_version: info.version,
        services: Vec::new(),
        publish: Vec::new(),
    })
}

/// The services a root filesystem's init keeps running that a start can wait for (banger's
/// guest agent, sshd), read from its `/etc/inittab` with `debugfs`, without mounting it. A root
/// banger made carries its agent even when it comes back through `image register`, and its VMs
/// must not be called ready before the agent answers. A root whose inittab cannot be read
/// (another init, no such file) declares none: its VMs are ready once started.
pub fn services_in_rootfs(runner: &dyn CommandRunner, rootfs: &Path) -> Vec<ServiceCheck> {
    let command = Debugfs::cat(rootfs, "/etc/inittab").command();
    match runner.run(&command) {
        Ok(output) => guest::services_in_inittab(&output.stdout_lossy()),
        Err(e) => {
            tracing::warn!(rootfs = %rootfs.display(), error = %e, "cannot read the root's inittab");
            Vec::new()
        }
    }
}

/// How [`install`] reports what it does; an operation implements it.
pub trait Reporter {
    fn begin(&self, stage: &str);
    fn progress(&self, stage: &str, done: u64, total: u64);
    fn done(&self, stage: &str, note: Option<String>);
    fn skip(&self, stage: &str, reason: &str);
    fn cancelled(&self) -> bool;
}

/// Copies one file into the store; [`banger_host::disk::copy_file`] in production, a
/// failure-injecting stand-in in tests.
pub type Copier<'a> = dyn FnMut(
        &Path,
        &Path,
        &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
    ) -> Result<CopyMethod, CopyError>
    + 'a;

/// Copies the sources into `image_dir` (which must not exist) and writes the manifest.
/// Returns the image to record. On error or cancellation `image_dir` is removed.
pub fn install(
    id: &str,
    name: &str,
    sources: &CheckedSources,
    image_dir: &Path,
    reporter: &dyn Reporter,
    copier: &mut Copier<'_>,
) -> Result<Image, RegisterError> {
    std::fs::create_dir_all(image_dir.parent().unwrap_or(Path::new("/")))
        .map_err(RegisterError::io("create the image store"))?;
    std::fs::create_dir(image_dir)
        .map_err(RegisterError::io(format!("create {}", image_dir.display())))?;
    let result = install_into(id, name, sources, image_dir, reporter, copier);
    if result.is_err()
        && let Err(e) = std::fs::remove_dir_all(image_dir)
    {
        tracing::error!(dir = %image_dir.display(), error = %e, "cannot remove a failed image");
    }
    result
}

fn install_into(
    id: &str,
    name: &str,
    sources: &CheckedSources,
    image_dir: &Path,
    reporter: &dyn Reporter,
    copier: &mut Copier<'_>,
) -> Result<Image, RegisterError> {
    let mut copy = |stage: &str, src: &Path, file: &str| -> Result<ImageFile, RegisterError> {
        reporter.begin(stage);
        let dst = image_dir.join(file);
        let method = copier(src, &dst, &mut |done, total| {
            reporter.progress(stage, done, total);
            if reporter.cancelled() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .map_err(|e| match e {
            CopyError::Cancelled => RegisterError::Cancelled,
            source => RegisterError::Copy {
                path: src.to_owned(),
                source,
            },
        })?;
        reporter.done(
            stage,
            Some(match method {
                CopyMethod::Reflink => "reflinked".into(),
                CopyMethod::Sparse => "sparse copy".into(),
            }),
        );
        stored_file(&dst)
    };
    let kernel = copy(STAGES[0], &sources.kernel, KERNEL_FILE)?;
    let initrd = match &sources.initrd {
        Some(path) => Some(copy(STAGES[1], path, INITRD_FILE)?),
        None => {
            reporter.skip(STAGES[1], "no initrd given");
            None
        }
    };
    let rootfs = copy(STAGES[2], &sources.rootfs, ROOTFS_FILE)?;
    if reporter.cancelled() {
        return Err(RegisterError::Cancelled);
    }

    reporter.begin(STAGES[3]);
    let created_at = Timestamp::now();
    let mut created_from = format!(
        "registered from kernel {}, rootfs {}",
        sources.kernel.display(),
        sources.rootfs.display()
    );
    if let Some(initrd) = &sources.initrd {
        created_from.push_str(&format!(", initrd {}", initrd.display()));
    }
    let manifest = ImageManifest {
        name: name.to_owned(),
        distro: None,
        suite: None,
        kernel_version: sources.kernel_version.clone(),
        packages: Vec::new(),
        services: sources.services.clone(),
        publish: sources.publish.clone(),
        // Read from the initrd: an image registered with an initrd banger made gets the same
        // fast VM creation as a bootstrapped one.
        init_features: match &sources.initrd {
            Some(initrd) => crate::initramfs::init_features(initrd)?,
            None => Vec::new(),
        },
        created_from,
        created_at,
        imported_from: None,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    std::fs::write(image_dir.join(MANIFEST_FILE), json)
        .map_err(RegisterError::io("write the manifest"))?;
    reporter.done(STAGES[3], None);

    Ok(Image {
        id: id.to_owned(),
        name: name.to_owned(),
        source: ImageSource::Registered,
        files: ImageFiles {
            kernel,
            initrd,
            rootfs,
        },
        manifest,
        created_at,
        retired: None,
    })
}

fn stored_file(path: &Path) -> Result<ImageFile, RegisterError> {
    let meta =
        std::fs::metadata(path).map_err(RegisterError::io(format!("stat {}", path.display())))?;
    Ok(ImageFile {
        path: path.display().to_string(),
        bytes: meta.len(),
        allocated_bytes: banger_host::disk::allocated_bytes(path).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_host::CommandSpec;
    use std::cell::{Cell, RefCell};

    #[derive(Default)]
    struct Log {
        events: RefCell<Vec<String>>,
        cancel_after_progress: Cell<Option<usize>>,
        progress_seen: Cell<usize>,
    }

    impl Reporter for Log {
        fn begin(&self, stage: &str) {
            self.events.borrow_mut().push(format!("begin {stage}"));
        }
        fn progress(&self, _stage: &str, _done: u64, _total: u64) {
            self.progress_seen.set(self.progress_seen.get() + 1);
        }
        fn done(&self, stage: &str, note: Option<String>) {
            self.events
                .borrow_mut()
                .push(format!("done {stage} {}", note.unwrap_or_default()));
        }
        fn skip(&self, stage: &str, _reason: &str) {
            self.events.borrow_mut().push(format!("skip {stage}"));
        }
        fn cancelled(&self) -> bool {
            self.cancel_after_progress
                .get()
                .is_some_and(|n| self.progress_seen.get() >= n)
        }
    }

    fn sources(dir: &Path, with_initrd: bool) -> CheckedSources {
        for f in ["k", "i", "r"] {
            std::fs::write(dir.join(f), vec![7u8; 10_000]).unwrap();
        }
        CheckedSources {
            kernel: dir.join("k"),
            initrd: with_initrd.then(|| dir.join("i")),
            rootfs: dir.join("r"),
            kernel_version: Some("6.1.0-test".into()),
            services: Vec::new(),
            publish: vec![4096],
        }
    }

    /// An ext4 image made from `tree` (relative path, contents) with `mkfs.ext4 -d`.
    fn ext4_with(dir: &Path, tree: &[(&str, &str)]) -> std::path::PathBuf {
        use banger_host::runner::RealRunner;
        let root = dir.join("tree");
        for (path, contents) in tree {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        let image = dir.join("rootfs.ext4");
        RealRunner
            .run(
                &CommandSpec::new("mkfs.ext4")
                    .args(["-q", "-F", "-d"])
                    .arg(root.to_string_lossy())
                    .arg(image.to_string_lossy())
                    .arg("8M"),
            )
            .unwrap();
        image
    }

    // Guards the registered-image readiness bug: a root banger bootstrapped, registered again
    // (as the lab does), was called ready at `started`, seconds before its agent answered.
    #[test]
    fn a_registered_root_declares_the_agent_and_sshd_its_inittab_respawns() {
        use banger_host::runner::RealRunner;
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = ext4_with(
            tmp.path(),
            &[(
                "etc/inittab",
                "::sysinit:/etc/banger/rc.boot\n::respawn:/usr/sbin/sshd -D -e\n\
                 ::respawn:/usr/local/sbin/banger-agent --listen-vm-ip\n",
            )],
        );
        let services = services_in_rootfs(&RealRunner, &rootfs);
        assert_eq!(
            services,
            [
                ServiceCheck {
                    name: "agent".into(),
                    port: 1024,
                    timeout_secs: None,
                    http: None,
                },
                ServiceCheck {
                    name: "ssh".into(),
                    port: 22,
                    timeout_secs: None,
                    http: None,
                }
            ]
        );
    }

    #[test]
    fn a_root_without_an_inittab_declares_no_services() {
        use banger_host::runner::RealRunner;
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = ext4_with(tmp.path(), &[("etc/hostname", "x\n")]);
        assert_eq!(services_in_rootfs(&RealRunner, &rootfs), []);
        // Not an ext4 image at all: no services, no error.
        assert_eq!(services_in_rootfs(&RealRunner, &tmp.path().join("etc")), []);
    }

    fn real_copy(
        src: &Path,
        dst: &Path,
        progress: &mut dyn FnMut(u64, u64) -> ControlFlow<()>,
    ) -> Result<CopyMethod, CopyError> {
        banger_host::disk::copy_file(src, dst, progress)
    }

    #[test]
    fn installs_every_file_and_the_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let src = sources(tmp.path(), true);
        let image_dir = tmp.path().join("images/abc");
        let log = Log::default();
        let image = install("abc", "base", &src, &image_dir, &log, &mut real_copy).unwrap();
        for f in [KERNEL_FILE, INITRD_FILE, ROOTFS_FILE, MANIFEST_FILE] {
            assert!(image_dir.join(f).is_file(), "{f} missing");
        }
        assert_eq!(image.files.kernel.bytes, 10_000);
        assert_eq!(image.manifest.kernel_version.as_deref(), Some("6.1.0-test"));
        let manifest: ImageManifest =
            serde_json::from_slice(&std::fs::read(image_dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        assert_eq!(manifest, image.manifest);
        let events = log.events.borrow();
        assert_eq!(events[0], "begin copy kernel");
        assert_eq!(events.last().unwrap(), "done write manifest ");
    }

    #[test]
    fn a_missing_initrd_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let src = sources(tmp.path(), false);
        let log = Log::default();
        let image = install(
            "a",
            "b",
            &src,
            &tmp.path().join("img"),
            &log,
            &mut real_copy,
        )
        .unwrap();
        assert!(image.files.initrd.is_none());
        assert!(log.events.borrow().contains(&"skip copy initrd".to_owned()));
    }

    #[test]
    fn a_failing_copy_removes_everything_already_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let src = sources(tmp.path(), true);
        let image_dir = tmp.path().join("images/abc");
        let calls = Cell::new(0);
        // Fail the third copy (the rootfs) after two real copies succeeded.
        let mut failing = |s: &Path, d: &Path, p: &mut dyn FnMut(u64, u64) -> ControlFlow<()>| {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                std::fs::write(d, b"partial").unwrap();
                return Err(CopyError::Write {
                    path: d.to_owned(),
                    source: std::io::Error::other("disk full"),
                });
            }
            banger_host::disk::copy_file(s, d, p)
        };
        let err = install(
            "abc",
            "base",
            &src,
            &image_dir,
            &Log::default(),
            &mut failing,
        )
        .unwrap_err();
        let text = crate::error_chain(&err);
        assert!(matches!(err, RegisterError::Copy { .. }), "{err:?}");
        assert!(text.contains("disk full"), "{text}");
        assert_eq!(calls.get(), 3);
        assert!(
            !image_dir.exists(),
            "the failed image directory was left behind"
        );
        assert!(
            tmp.path()
                .join("images")
                .read_dir()
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn cancellation_during_a_copy_removes_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let src = sources(tmp.path(), true);
        let image_dir = tmp.path().join("images/abc");
        let log = Log::default();
        log.cancel_after_progress.set(Some(1));
        let err = install("abc", "base", &src, &image_dir, &log, &mut real_copy).unwrap_err();
        assert!(matches!(err, RegisterError::Cancelled), "{err:?}");
        assert!(!image_dir.exists());
    }

    #[test]
    fn an_existing_image_dir_is_never_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let src = sources(tmp.path(), false);
        let image_dir = tmp.path().join("img");
        std::fs::create_dir(&image_dir).unwrap();
        std::fs::write(image_dir.join("keep"), b"x").unwrap();
        assert!(install("a", "b", &src, &image_dir, &Log::default(), &mut real_copy).is_err());
        assert!(image_dir.join("keep").exists());
    }

    #[test]
    fn relative_paths_are_refused_before_any_check() {
        let err = check_sources("vmlinux", None, "/r").unwrap_err();
        assert!(err.to_string().contains("not absolute"));
        assert!(err.hint().unwrap().contains("absolute paths"));
    }
}
