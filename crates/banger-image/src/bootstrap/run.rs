//! One bootstrap's run: its stages in order (listed in `bootstrap`'s documentation), each a
//! method of [`Run`], from resolving the kernel package to writing the manifest, with the
//! caches of downloaded packages and of the installed root.

use std::io;
use std::path::{Path, PathBuf};

use banger_api::{Image, ImageFiles, ImageManifest, ImageSource, ServiceCheck, Timestamp};
use banger_host::CommandSpec;

use super::steps::{
    begin_stage, cached_note, clean_root, file_sha256, make_rootfs, run_step, stored,
    vmdisk_size_note, write_manifest,
};
use super::{
    ARCH, BootstrapError, BootstrapInputs, BootstrapManifest, BootstrapSpec, DISTRO, Host,
    ImageSizes, KERNEL_METAPACKAGE, PACKAGES, STAGES, WORK_SEED_DIR, WorkSeed,
};
use super::{debian, guest};
use crate::initramfs::{self, InitramfsCompression};
use crate::kernel;
use crate::register::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE, Reporter};
use crate::vmdisk;

/// Where the staged root came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootSource {
    Downloaded,
    PackagesCached,
    RootCached,
}

/// The concrete kernel package.
#[derive(Debug, Clone)]
struct KernelPackage {
    name: String,
    version: String,
}

pub(super) struct Run<'a> {
    pub(super) id: &'a str,
    pub(super) spec: &'a BootstrapSpec,
    pub(super) host: &'a Host<'a>,
    pub(super) image_dir: &'a Path,
    pub(super) staging: &'a Path,
    pub(super) reporter: &'a dyn Reporter,
}

impl Run<'_> {
    fn begin(&self, stage: &str) -> Result<(), BootstrapError> {
        begin_stage(self.reporter, stage)
    }

    /// Runs one forward step. A cancel request stops it while it runs (debootstrap can take
    /// minutes): the command's processes are terminated and the usual rollback follows.
    fn run(&self, step: &'static str, cmd: CommandSpec) -> Result<String, BootstrapError> {
        run_step(self.host, &|| self.reporter.cancelled(), step, cmd)
    }

    pub(super) fn stages(&mut self) -> Result<Image, BootstrapError> {
        let [
            s_resolve,
            s_download,
            s_debootstrap,
            s_clean,
            s_configure,
            s_kernel,
            s_initramfs,
            s_rootfs,
            s_seed,
            s_manifest,
        ] = STAGES;

        self.begin(s_resolve)?;
        let package = self.resolve_kernel()?;
        self.reporter.done(
            s_resolve,
            Some(format!("{} {}", package.name, package.version)),
        );

        self.begin(s_download)?;
        let (deb, kernel_cached) = self.download_kernel(&package)?;
        self.reporter
            .done(s_download, Some(cached_note(kernel_cached)));

        self.begin(s_debootstrap)?;
        let debootstrap_version = self
            .run(
                "debootstrap --version",
                CommandSpec::new("debootstrap").arg("--version"),
            )?
            .trim()
            .to_owned();
        let (root, root_source) = self.root()?;
        self.reporter.done(
            s_debootstrap,
            Some(
                match root_source {
                    RootSource::RootCached => "installed root cached",
                    RootSource::PackagesCached => "packages cached",
                    RootSource::Downloaded => "downloaded",
                }
                .to_owned(),
            ),
        );

        self.begin(s_clean)?;
        let removed = self.clean_root(&root)?;
        self.reporter
            .done(s_clean, Some(format!("{removed} files removed")));

        self.begin(s_configure)?;
        let agent = self.configure_guest(&root)?;
        self.reporter.done(
            s_configure,
            Some(if agent {
                "busybox init, sshd, agent".to_owned()
            } else {
                "busybox init, sshd (no agent given)".to_owned()
            }),
        );

        self.begin(s_kernel)?;
        let (kernel_tree, release, vmlinux_bytes) = self.extract_kernel(&package, &deb)?;
        self.install_modules(&kernel_tree, &release, &root)?;
        self.reporter.done(
            s_kernel,
            Some(format!("{release}, modules in /lib/modules")),
        );

        self.begin(s_initramfs)?;
        let initrd = self.image_dir.join(INITRD_FILE);
        let report = initramfs::build_initramfs(
            &self.spec.init_binary,
            &kernel_tree.join("lib/modules").join(&release),
            initramfs::GUEST_MODULES,
            InitramfsCompression::Gzip,
            &initrd,
        )?;
        self.reporter.done(
            s_initramfs,
            Some(format!("{} modules", report.modules.len())),
        );

        self.begin(s_rootfs)?;
        let (rootfs, root_used_bytes) = self.make_rootfs(&root)?;
        self.reporter
            .done(s_rootfs, Some(vmdisk_size_note(root_used_bytes)));

        self.begin(s_seed)?;
        let seed = self.write_work_seed(&root)?;
        self.reporter.done(s_seed, None);

        self.begin(s_manifest)?;
        let status_path = root.join("var/lib/dpkg/status");
        let status =
            std::fs::read_to_string(&status_path).map_err(|source| BootstrapError::Io {
                what: "read",
                path: status_path,
                source,
            })?;
        let created_at = Timestamp::now();
        let files = ImageFiles {
            kernel: stored(&self.image_dir.join(KERNEL_FILE))?,
            initrd: Some(stored(&initrd)?),
            rootfs: stored(&rootfs)?,
        };
        let image_manifest = ImageManifest {
            publish: Vec::new(),
            name: self.spec.name.clone(),
            distro: Some(DISTRO.to_owned()),
            suite: Some(self.spec.suite.clone()),
            kernel_version: Some(release.clone()),
            packages: debian::installed_packages(&status),
            // The agent first: a start waits for each in this order.
            services: agent
                .then(|| ServiceCheck {
                    name: guest::AGENT_SERVICE.to_owned(),
                    port: guest::AGENT_PORT,
                    timeout_secs: None,
                    http: None,
                })
                .into_iter()
                .chain([ServiceCheck {
                    name: "ssh".to_owned(),
                    port: 22,
                    timeout_secs: None,
                    http: None,
                }])
                .collect(),
            init_features: crate::initramfs::init_features(&initrd).map_err(|e| {
                BootstrapError::Io {
                    what: "read",
                    path: initrd.clone(),
                    source: io::Error::other(e),
                }
            })?,
            created_from: format!(
                "debootstrap {} ({}, minbase) from {}, kernel {} {}",
                self.spec.suite,
                debootstrap_version,
                self.spec.mirror,
                package.name,
                package.version
            ),
            created_at,
            imported_from: None,
        };
        let manifest = BootstrapManifest {
            image: image_manifest.clone(),
            inputs: BootstrapInputs {
                mirror: self.spec.mirror.clone(),
                variant: "minbase".to_owned(),
                packages: PACKAGES.iter().map(|p| (*p).to_owned()).collect(),
                kernel_package: package.name.clone(),
                kernel_package_version: package.version.clone(),
                debootstrap_version,
                banger_version: env!("CARGO_PKG_VERSION").to_owned(),
                init_sha256: file_sha256(&self.spec.init_binary)?,
                guest_init: "busybox".to_owned(),
                agent,
                kernel_cached,
                packages_cached: root_source != RootSource::Downloaded,
                root_cached: root_source == RootSource::RootCached,
            },
            sizes: ImageSizes {
                vmlinux_bytes,
                initrd_bytes: report.bytes,
                rootfs_bytes: files.rootfs.bytes,
                rootfs_allocated_bytes: files.rootfs.allocated_bytes,
                root_used_bytes,
            },
            work_seed: WorkSeed {
                dir: WORK_SEED_DIR.to_owned(),
                fingerprint: seed,
            },
            initramfs_modules: report.modules,
        };
        write_manifest(self.image_dir, &manifest)?;
        self.reporter.done(s_manifest, None);
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        Ok(Image {
            id: self.id.to_owned(),
            name: self.spec.name.clone(),
            source: ImageSource::Bootstrapped,
            files,
            manifest: image_manifest,
            created_at,
            retired: None,
        })
    }

    fn resolve_kernel(&self) -> Result<KernelPackage, BootstrapError> {
        let depends = self.run(
            "resolving the kernel package",
            CommandSpec::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        )?;
        let name = debian::kernel_package_from_depends(&depends)
            .ok_or(BootstrapError::NoKernelPackage { output: depends })?;
        let show = self.run(
            "resolving the kernel package",
            CommandSpec::new("apt-cache").args(["show", "--no-all-versions", &name]),
        )?;
        let version = debian::version_from_show(&show)
            .ok_or(BootstrapError::NoKernelPackage { output: show })?;
        Ok(KernelPackage { name, version })
    }

    /// The cached `.deb` of `package`, downloaded first when missing. Returns whether it was
    /// cached.
    fn download_kernel(&self, package: &KernelPackage) -> Result<(PathBuf, bool), BootstrapError> {
        let dir = self.host.cache_dir.join("kernel");
        std::fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let deb = dir.join(debian::deb_file_name(&package.name, &package.version, ARCH));
        if deb.is_file() {
            return Ok((deb, true));
        }
        // A directory of its own, so a concurrent or interrupted download never leaves a
        // partial file under the final name.
        let tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempdir_in(&dir)
            .map_err(|source| BootstrapError::Io {
                what: "create a download directory in",
                path: dir.clone(),
                source,
            })?;
        // apt-get download writes into its working directory.
        self.run(
            "downloading the kernel package",
            CommandSpec::new("sh").args([
                "-c".to_owned(),
                r#"cd "$1" && exec apt-get download -q "$2""#.to_owned(),
                "sh".to_owned(),
                tmp.path().display().to_string(),
                format!("{}={}", package.name, package.version),
            ]),
        )?;
        let got = std::fs::read_dir(tmp.path())
            .map_err(|source| BootstrapError::Io {
                what: "read",
                path: tmp.path().to_owned(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .ok_or_else(|| BootstrapError::Io {
                what: "find the downloaded package in",
                path: tmp.path().to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "apt-get download left no .deb"),
            })?;
        std::fs::rename(&got, &deb).map_err(|source| BootstrapError::Io {
            what: "move the downloaded package to",
            path: deb.clone(),
            source,
        })?;
        Ok((deb, false))
    }

    fn debootstrap_args(&self, tarball: &str, unpack: bool, target: &Path) -> Vec<String> {
        vec![
            "--variant=minbase".to_owned(),
            format!("--arch={ARCH}"),
            format!("--include={}", PACKAGES.join(",")),
            if unpack {
                format!("--unpack-tarball={tarball}")
            } else {
                format!("--make-tarball={tarball}")
            },
            self.spec.suite.clone(),
            target.display().to_string(),
            self.spec.mirror.clone(),
        ]
    }

    /// Installs the root into `<staging>/root`. The fastest source wins: the cached installed
    /// root (a tar of a previous debootstrap of the same inputs, taken before banger changed
    /// anything), else the cached package tarball (`--unpack-tarball`), else the mirror
    /// (`--make-tarball` first, then the same). After a debootstrap the installed root is
    /// cached for next time; failing to cache it only costs speed, so it is logged, not fatal.
    fn root(&self) -> Result<(PathBuf, RootSource), BootstrapError> {
        let dir = self.host.cache_dir.join("rootfs");
        let cached_root = dir.join(format!(
            "{}-{ARCH}-{}.tar",
            self.spec.suite,
            self.spec.cache_key()
        ));
        let root = self.staging.join("root");
        if cached_root.is_file() {
            std::fs::create_dir(&root).map_err(|source| BootstrapError::Io {
                what: "create",
                path: root.clone(),
                source,
            })?;
            self.run(
                "unpacking the cached root filesystem",
                self.root_tar(
                    &root,
                    ["-xpf".to_owned(), cached_root.display().to_string()],
                ),
            )?;
            return Ok((root, RootSource::RootCached));
        }
        let packages_cached = self.debootstrap(&root)?;
        if self.reporter.cancelled() {
            return Err(BootstrapError::Cancelled);
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot cache the installed root");
        } else {
            let partial = dir.join(format!(
                ".{}-{}.partial.tar",
                self.spec.cache_key(),
                self.id
            ));
            let cached = through_partial(
                &partial,
                &cached_root,
                ("root tarball", "move the root tarball to"),
                || {
                    self.run(
                        "caching the installed root filesystem",
                        self.root_tar(
                            &root,
                            [
                                "--one-file-system".to_owned(),
                                "-cpf".to_owned(),
                                partial.display().to_string(),
                                ".".to_owned(),
                            ],
                        ),
                    )
                },
            );
            if let Err(e) = cached {
                tracing::warn!(error = %crate::error_chain(&e), "cannot cache the installed root; the next bootstrap installs the packages again");
            }
        }
        Ok((
            root,
            if packages_cached {
                RootSource::PackagesCached
            } else {
                RootSource::Downloaded
            },
        ))
    }

    /// `tar` in `root` as root, keeping numeric owners and extended attributes: the cached root
    /// tarball is packed and unpacked with the same options, so an unpacked root is the one
    /// that was packed.
    fn root_tar(&self, root: &Path, args: impl IntoIterator<Item = String>) -> CommandSpec {
        self.host.privileged(
            "tar",
            [
                "-C".to_owned(),
                root.display().to_string(),
                "--numeric-owner".to_owned(),
                "--xattrs".to_owned(),
            ]
            .into_iter()
            .chain(args),
        )
    }

    /// debootstraps into `root` from the cached package tarball, making the tarball first
    /// when it is missing. Returns whether the tarball was cached.
    fn debootstrap(&self, root: &Path) -> Result<bool, BootstrapError> {
        let dir = self.host.cache_dir.join("debootstrap");
        std::fs::create_dir_all(&dir).map_err(|source| BootstrapError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let tarball = dir.join(format!(
            "{}-{ARCH}-{}.tgz",
            self.spec.suite,
            self.spec.cache_key()
        ));
        let cached = tarball.is_file();
        if !cached {
            // debootstrap wants the name to end in .tgz; a per-bootstrap name keeps two
            // bootstraps of the same inputs from writing one file.
            let partial = dir.join(format!(
                ".{}-{}.partial.tgz",
                self.spec.cache_key(),
                self.id
            ));
            through_partial(
                &partial,
                &tarball,
                ("package tarball", "move the package tarball to"),
                || {
                    self.run(
                        "downloading the packages (debootstrap --make-tarball)",
                        self.host.privileged(
                            "debootstrap",
                            self.debootstrap_args(
                                &partial.display().to_string(),
                                false,
                                &self.staging.join("download"),
                            ),
                        ),
                    )
                },
            )?;
            if self.reporter.cancelled() {
                return Err(BootstrapError::Cancelled);
            }
        }
        self.run(
            "installing the root filesystem (debootstrap)",
            self.host.privileged(
                "debootstrap",
                self.debootstrap_args(&tarball.display().to_string(), true, root),
            ),
        )?;
        Ok(cached)
    }

    fn clean_root(&self, root: &Path) -> Result<usize, BootstrapError> {
        clean_root(self.host, &|| self.reporter.cancelled(), root)
    }

    /// Copies banger's guest files into the root, then installs the agent when given.
    fn configure_guest(&self, root: &Path) -> Result<bool, BootstrapError> {
        let staged = self.staging.join("guest");
        let merged_usr = std::fs::symlink_metadata(root.join("sbin")).is_ok_and(|m| m.is_symlink());
        guest::stage(&staged, merged_usr).map_err(|source| BootstrapError::Io {
            what: "stage the guest files in",
            path: staged.clone(),
            source,
        })?;
        self.run(
            "installing banger's guest files",
            self.host.privileged(
                "cp",
                [
                    "-R".to_owned(),
                    "--preserve=mode".to_owned(),
                    "--remove-destination".to_owned(),
                    "--".to_owned(),
                    format!("{}/.", staged.display()),
                    format!("{}/", root.display()),
                ],
            ),
        )?;
        Ok(guest::install_agent(
            self.host.runner,
            self.host.privilege,
            root,
            self.spec.agent_binary.as_deref(),
        )?)
    }

    /// Unpacks the kernel package and writes `vmlinux`; returns the unpacked tree, the
    /// kernel release and the vmlinux size.
    fn extract_kernel(
        &self,
        package: &KernelPackage,
        deb: &Path,
    ) -> Result<(PathBuf, String, u64), BootstrapError> {
        let tree = self.staging.join("kernel");
        self.run(
            "unpacking the kernel package",
            CommandSpec::new("dpkg-deb").args([
                "-x".to_owned(),
                deb.display().to_string(),
                tree.display().to_string(),
            ]),
        )?;
        let boot = tree.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .ok_or_else(|| BootstrapError::NoVmlinuz {
                package: package.name.clone(),
            })?;
        let release = vmlinuz
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("vmlinuz-")
                    .to_owned()
            })
            .unwrap_or_default();
        let extracted = kernel::extract_vmlinux(&vmlinuz, &self.image_dir.join(KERNEL_FILE))?;
        Ok((tree, release, extracted.bytes))
    }

    /// Copies the kernel's module tree into the root and indexes it there, so that the guest
    /// can load what its initramfs did not (tun, fuse, nf_tables, ...) with `modprobe`
    /// (BusyBox's, see [`guest::files`]). The index is made by the root's own BusyBox
    /// `depmod` inside the root, so it is in the format the guest's `modprobe` reads.
    fn install_modules(
        &self,
        kernel_tree: &Path,
        release: &str,
        root: &Path,
    ) -> Result<(), BootstrapError> {
        let modules = root.join("lib/modules");
        self.run(
            "installing the kernel's modules",
            self.host
                .privileged("mkdir", ["-p".to_owned(), modules.display().to_string()]),
        )?;
        self.run(
            "installing the kernel's modules",
            self.host.privileged(
                "cp",
                [
                    "-R".to_owned(),
                    "--preserve=mode,timestamps".to_owned(),
                    "--".to_owned(),
                    kernel_tree
                        .join("lib/modules")
                        .join(release)
                        .display()
                        .to_string(),
                    format!("{}/", modules.display()),
                ],
            ),
        )?;
        self.run(
            "indexing the kernel's modules (depmod)",
            self.host.privileged(
                "chroot",
                [
                    root.display().to_string(),
                    "/bin/busybox".to_owned(),
                    "depmod".to_owned(),
                    release.to_owned(),
                ],
            ),
        )?;
        Ok(())
    }

    fn make_rootfs(&self, root: &Path) -> Result<(PathBuf, u64), BootstrapError> {
        let rootfs = self.image_dir.join(ROOTFS_FILE);
        let used = make_rootfs(self.host, &|| self.reporter.cancelled(), root, &rootfs)?;
        Ok((rootfs, used))
    }

    /// The work seed: root's shell start-up files (Debian's, from base-files), in a
    /// directory the image owns. Returns its fingerprint.
    fn write_work_seed(&self, root: &Path) -> Result<String, BootstrapError> {
        use std::os::unix::fs::PermissionsExt;
        let seed = self.image_dir.join(WORK_SEED_DIR);
        let io_error = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BootstrapError::Io { what, path, source }
        };
        std::fs::create_dir(&seed).map_err(io_error("create", &seed))?;
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error("set the mode of", &seed))?;
        for (name, sources) in [
            (
                ".bashrc",
                ["usr/share/base-files/dot.bashrc", "etc/skel/.bashrc"],
            ),
            (
                ".profile",
                ["usr/share/base-files/dot.profile", "etc/skel/.profile"],
            ),
        ] {
            let Some(contents) = sources
                .iter()
                .find_map(|s| std::fs::read(root.join(s)).ok())
            else {
                continue;
            };
            let dst = seed.join(name);
            std::fs::write(&dst, contents).map_err(io_error("write", &dst))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
                .map_err(io_error("set the mode of", &dst))?;
        }
        Ok(vmdisk::fingerprint(&seed)?)
    }
}

/// Makes the cache file `dest` through `partial`: `make` writes `partial`, which then takes
/// `dest`'s name (`moving` says so in an error), so the cache never holds half a `what` (a
/// root tarball). On any failure `partial` is removed.
fn through_partial(
    partial: &Path,
    dest: &Path,
    (what, moving): (&str, &'static str),
    make: impl FnOnce() -> Result<String, BootstrapError>,
) -> Result<(), BootstrapError> {
    let made = make().and_then(|_| {
        std::fs::rename(partial, dest).map_err(|source| BootstrapError::Io {
            what: moving,
            path: dest.to_owned(),
            source,
        })
    });
    if made.is_err()
        && let Err(rm) = std::fs::remove_file(partial)
        && rm.kind() != io::ErrorKind::NotFound
    {
        tracing::error!(file = %partial.display(), error = %rm, "cannot remove a partial {what}");
    }
    made
}
