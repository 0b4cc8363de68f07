//! The bootstrap against a scripted host: a [`FakeRunner`] records every command and fails the
//! ones a test names, and [`Scripted`] gives the successful ones the effects the real tools
//! have on the files the next stage reads (a debootstrapped tree, an unpacked kernel package,
//! a real `mkfs.ext4`).
//!
//! They stay in one file because every test runs the bootstrap against the same [`Env`] and
//! [`Scripted`] host.

use super::*;
use std::cell::{Cell, RefCell};
use std::os::unix::fs::PermissionsExt;

use banger_api::ImageSource;
use banger_host::{CommandOutput, FakeRunner, Matcher, RealRunner};
use banger_test_support::fake_vmlinux;

use crate::register::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::{initramfs, vmdisk};

const RELEASE: &str = "6.1.0-99-cloud-amd64";
const PACKAGE: &str = "linux-image-6.1.0-99-cloud-amd64";
const VERSION: &str = "6.1.123-1";

#[derive(Debug)]
struct Scripted {
    fake: FakeRunner,
    /// What `dpkg-deb -x` unpacks as the kernel: a valid ELF vmlinux unless a test breaks it.
    vmlinuz: Vec<u8>,
    /// Modules the unpacked package lists as built in.
    builtin: Vec<&'static str>,
    /// A debootstrap argument prefix (`--make-tarball=`, `--unpack-tarball=`): that run is
    /// cancelled half-way, leaving what a real half-run leaves.
    cancel_during: Option<&'static str>,
}

impl Scripted {
    fn new(fake: FakeRunner) -> Scripted {
        let fake = fake
            .respond(
                Matcher::prefix("apt-cache", ["depends"]),
                CommandOutput::with_stdout(format!(
                    "linux-image-cloud-amd64\n  Depends: {PACKAGE}\n"
                )),
            )
            .respond(
                Matcher::prefix("apt-cache", ["show"]),
                CommandOutput::with_stdout(format!("Package: {PACKAGE}\nVersion: {VERSION}\n")),
            )
            .respond(
                Matcher::prefix("debootstrap", ["--version"]),
                CommandOutput::with_stdout("debootstrap 1.0.128+nmu2\n"),
            )
            .respond(
                "du",
                CommandOutput::with_stdout("104857600\t/staging/root\n"),
            )
            .respond(
                Matcher::prefix("sudo", ["-n", "du"]),
                CommandOutput::with_stdout("104857600\t/staging/root\n"),
            );
        Scripted {
            fake,
            vmlinuz: fake_vmlinux(RELEASE),
            builtin: initramfs::GUEST_MODULES.to_vec(),
            cancel_during: None,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.fake.calls()
    }
}

/// The arguments after `sudo -n`, if any.
fn unwrapped(cmd: &CommandSpec) -> (String, Vec<String>) {
    if cmd.program == "sudo" && cmd.args.first().is_some_and(|a| a == "-n") {
        (cmd.args[1].clone(), cmd.args[2..].to_vec())
    } else {
        (cmd.program.clone(), cmd.args.clone())
    }
}

impl CommandRunner for Scripted {
    fn run_cancellable(
        &self,
        cmd: &CommandSpec,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<CommandOutput, RunError> {
        let (program, args) = unwrapped(cmd);
        let Some(prefix) = self.cancel_during else {
            return self.run(cmd);
        };
        let Some(target) = args.iter().find_map(|a| a.strip_prefix(prefix)) else {
            return self.run(cmd);
        };
        assert_eq!(program, "debootstrap");
        assert!(!cancelled(), "the reporter was not asked to cancel yet");
        self.fake.run(cmd)?;
        if prefix == "--make-tarball=" {
            // Half a download.
            std::fs::write(target, b"pack").unwrap();
        } else {
            // Half an installed root.
            let root = Path::new(&args[args.len() - 2]);
            std::fs::create_dir_all(root.join("usr/bin")).unwrap();
            std::fs::write(root.join("usr/bin/half"), b"").unwrap();
        }
        Err(RunError::Cancelled {
            command: cmd.display(),
        })
    }

    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        let out = self.fake.run(cmd)?;
        let (program, args) = unwrapped(cmd);
        let arg = |prefix: &str| {
            args.iter()
                .find_map(|a| a.strip_prefix(prefix))
                .map(PathBuf::from)
        };
        match program.as_str() {
            "sh" => {
                // apt-get download into $1
                let dir = PathBuf::from(&args[3]);
                std::fs::write(
                    dir.join(debian::deb_file_name(PACKAGE, VERSION, ARCH)),
                    b"!<arch>\n",
                )
                .unwrap();
            }
            "debootstrap" => {
                if let Some(tarball) = arg("--make-tarball=") {
                    std::fs::write(tarball, b"packages").unwrap();
                } else if arg("--unpack-tarball=").is_some() {
                    fake_debootstrapped_root(Path::new(&args[args.len() - 2]));
                }
            }
            "rm" => {
                let start = args.iter().position(|a| a == "--").unwrap() + 1;
                for path in &args[start..] {
                    let path = Path::new(path);
                    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                        std::fs::remove_dir_all(path).unwrap();
                    } else {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            "dpkg-deb" => {
                let tree = Path::new(&args[2]);
                std::fs::create_dir_all(tree.join("boot")).unwrap();
                std::fs::write(tree.join(format!("boot/vmlinuz-{RELEASE}")), &self.vmlinuz)
                    .unwrap();
                let modules = tree.join("lib/modules").join(RELEASE);
                std::fs::create_dir_all(modules.join("kernel")).unwrap();
                std::fs::write(modules.join("modules.dep"), "").unwrap();
                let builtin: String = self
                    .builtin
                    .iter()
                    .map(|m| format!("kernel/{m}.ko\n"))
                    .collect();
                std::fs::write(modules.join("modules.builtin"), builtin).unwrap();
            }
            "tar" => {
                let root = Path::new(&args[1]);
                if let Some(at) = args.iter().position(|a| a == "-cpf") {
                    std::fs::write(&args[at + 1], b"installed root").unwrap();
                } else {
                    fake_debootstrapped_root(root);
                }
            }
            "mkfs.ext4" => {
                return RealRunner.run(&CommandSpec::new("mkfs.ext4").args(args));
            }
            _ => {}
        }
        Ok(out)
    }
}

/// What debootstrap leaves: a dpkg status, host keys, apt lists and caches, base-files' dot
/// files.
fn fake_debootstrapped_root(root: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "var/lib/dpkg/status",
            "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2\n\n\
             Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n",
        ),
        ("etc/ssh/ssh_host_ed25519_key", "secret"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "public"),
        (
            "etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\n",
        ),
        (
            "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
            "x",
        ),
        ("var/lib/apt/lists/lock", ""),
        ("var/cache/apt/pkgcache.bin", "x"),
        ("var/cache/apt/archives/bash_5.2_amd64.deb", "x"),
        ("var/log/dpkg.log", "x"),
        ("usr/share/base-files/dot.bashrc", "# root's bashrc\n"),
        ("usr/share/base-files/dot.profile", "# root's profile\n"),
        ("bin/busybox", "elf"),
    ];
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    std::fs::create_dir_all(root.join("var/lib/apt/lists/partial")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
}

#[derive(Default)]
struct Log {
    events: RefCell<Vec<String>>,
    /// Cancel once this stage is done.
    cancel_after: Cell<Option<&'static str>>,
    cancel: Cell<bool>,
}

impl Reporter for Log {
    fn begin(&self, stage: &str) {
        self.events.borrow_mut().push(format!("begin {stage}"));
    }
    fn progress(&self, _stage: &str, _done: u64, _total: u64) {}
    fn done(&self, stage: &str, note: Option<String>) {
        self.events
            .borrow_mut()
            .push(format!("done {stage}: {}", note.unwrap_or_default()));
        if self.cancel_after.get() == Some(stage) {
            self.cancel.set(true);
        }
    }
    fn skip(&self, stage: &str, reason: &str) {
        self.events
            .borrow_mut()
            .push(format!("skip {stage}: {reason}"));
    }
    fn cancelled(&self) -> bool {
        self.cancel.get()
    }
}

struct Env {
    tmp: tempfile::TempDir,
    spec: BootstrapSpec,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let init = tmp.path().join("banger-init");
        std::fs::write(&init, b"\x7fELF static init").unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        let spec = BootstrapSpec::new("debian", "bookworm", init);
        Env { tmp, spec }
    }

    fn host<'a>(&self, runner: &'a dyn CommandRunner, privilege: Privilege) -> Host<'a> {
        Host {
            runner,
            privilege,
            cache_dir: self.tmp.path().join("cache"),
            staging_parent: self.tmp.path().join("staging"),
            mounts_file: self.tmp.path().join("mounts"),
        }
    }

    fn image_dir(&self) -> PathBuf {
        self.tmp.path().join("images/0123456789abcdef")
    }

    fn staging(&self) -> PathBuf {
        self.tmp.path().join("staging/bootstrap-0123456789abcdef")
    }

    fn tarball(&self) -> PathBuf {
        self.tmp.path().join(format!(
            "cache/debootstrap/bookworm-amd64-{}.tgz",
            self.spec.cache_key()
        ))
    }

    fn root_tarball(&self) -> PathBuf {
        self.tmp.path().join(format!(
            "cache/rootfs/bookworm-amd64-{}.tar",
            self.spec.cache_key()
        ))
    }

    fn deb(&self) -> PathBuf {
        self.tmp
            .path()
            .join("cache/kernel")
            .join(debian::deb_file_name(PACKAGE, VERSION, ARCH))
    }

    fn run(&self, runner: &Scripted, log: &Log) -> Result<Image, BootstrapError> {
        bootstrap(
            "0123456789abcdef",
            &self.spec,
            &self.host(runner, Privilege::Root),
            &self.image_dir(),
            log,
        )
    }

    /// The command lines of a cold bootstrap, in order.
    fn cold_calls(&self) -> Vec<String> {
        let staging = self.staging();
        let s = staging.display();
        let cache = self.tmp.path().join("cache");
        let key = self.spec.cache_key();
        let root = format!("{s}/root");
        let image = self.image_dir();
        let i = image.display();
        let includes = "--include=openssh-server,iproute2,ca-certificates,procps,busybox,netbase";
        vec![
            "apt-cache depends linux-image-cloud-amd64".to_owned(),
            format!("apt-cache show --no-all-versions {PACKAGE}"),
            format!(
                "sh -c 'cd \"$1\" && exec apt-get download -q \"$2\"' sh {}/kernel/.download-XXXX {PACKAGE}={VERSION}",
                cache.display()
            ),
            "debootstrap --version".to_owned(),
            format!(
                "debootstrap --variant=minbase --arch=amd64 {includes} --make-tarball={}/debootstrap/.{key}-0123456789abcdef.partial.tgz bookworm {s}/download http://deb.debian.org/debian",
                cache.display()
            ),
            format!(
                "debootstrap --variant=minbase --arch=amd64 {includes} --unpack-tarball={} bookworm {root} http://deb.debian.org/debian",
                self.tarball().display()
            ),
            format!(
                "tar -C {root} --numeric-owner --xattrs --one-file-system -cpf {}/rootfs/.{key}-0123456789abcdef.partial.tar .",
                cache.display()
            ),
            format!(
                "rm -rf --one-file-system -- {root}/etc/ssh/ssh_host_ed25519_key {root}/etc/ssh/ssh_host_ed25519_key.pub \
                 {root}/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease {root}/var/cache/apt/pkgcache.bin \
                 {root}/var/cache/apt/archives/bash_5.2_amd64.deb {root}/var/log/dpkg.log"
            ),
            format!("cp -R --preserve=mode --remove-destination -- {s}/guest/. {root}/"),
            format!("dpkg-deb -x {} {s}/kernel", self.deb().display()),
            format!("mkdir -p {root}/lib/modules"),
            format!(
                "cp -R --preserve=mode,timestamps -- {s}/kernel/lib/modules/{RELEASE} {root}/lib/modules/"
            ),
            format!("chroot {root} /bin/busybox depmod {RELEASE}"),
            format!("du -s -x -B1 {root}"),
            format!(
                "mkfs.ext4 -q -F -L banger-base -m 0 -i 8192 -d {root} -E root_owner=0:0 {i}/rootfs.ext4"
            ),
            format!("rm -rf --one-file-system -- {s}"),
        ]
    }
}

/// Calls with the random download directory's name made stable.
fn normalized(calls: Vec<String>) -> Vec<String> {
    calls
        .into_iter()
        .map(|c| match c.find("/.download-") {
            Some(at) => {
                let end = c[at..].find(' ').map_or(c.len(), |e| at + e);
                format!("{}/.download-XXXX{}", &c[..at], &c[end..])
            }
            None => c,
        })
        .collect()
}

fn mkfs_available() -> bool {
    match RealRunner.run(&CommandSpec::new("mkfs.ext4").arg("-V")) {
        Err(RunError::NotFound { .. }) => {
            banger_test_support::skip!("mkfs.ext4 not found (Debian package e2fsprogs)");
            false
        }
        _ => true,
    }
}

fn assert_rolled_back(env: &Env, runner: &Scripted) {
    assert!(!env.image_dir().exists(), "the image directory was left");
    assert!(!env.staging().exists(), "the staging directory was left");
    assert_eq!(
        runner.calls().last().unwrap(),
        &format!("rm -rf --one-file-system -- {}", env.staging().display()),
        "the staging directory is removed last"
    );
    let leftovers: Vec<_> = ["cache/debootstrap", "cache/rootfs"]
        .iter()
        .flat_map(|dir| {
            std::fs::read_dir(env.tmp.path().join(dir))
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_else(|_| Vec::new())
        })
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "a partial tarball was left: {leftovers:?}"
    );
}

#[test]
fn a_cold_bootstrap_runs_every_stage_and_writes_the_image() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    let runner = Scripted::new(FakeRunner::new());
    let log = Log::default();
    let image = env.run(&runner, &log).unwrap();

    assert_eq!(normalized(runner.calls()), env.cold_calls());
    let dir = env.image_dir();
    for f in [
        KERNEL_FILE,
        INITRD_FILE,
        ROOTFS_FILE,
        MANIFEST_FILE,
        WORK_SEED_DIR,
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    assert!(!env.staging().exists());
    assert!(
        env.tarball().is_file() && env.deb().is_file(),
        "cache filled"
    );
    assert_eq!(image.source, ImageSource::Bootstrapped);
    assert_eq!(image.manifest.kernel_version.as_deref(), Some(RELEASE));
    assert_eq!(image.manifest.suite.as_deref(), Some("bookworm"));
    assert_eq!(
        image
            .manifest
            .packages
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["bash", "openssh-server"]
    );
    assert_eq!(image.manifest.services[0].port, 22);
    assert_eq!(image.files.rootfs.bytes, rootfs_size(100 * MIB));

    let manifest = read_manifest(&dir).unwrap();
    assert_eq!(manifest.image, image.manifest);
    assert_eq!(manifest.inputs.kernel_package, PACKAGE);
    assert_eq!(manifest.inputs.kernel_package_version, VERSION);
    assert_eq!(
        manifest.inputs.debootstrap_version,
        "debootstrap 1.0.128+nmu2"
    );
    assert!(!manifest.inputs.kernel_cached && !manifest.inputs.packages_cached);
    assert_eq!(manifest.inputs.guest_init, "busybox");
    assert_eq!(manifest.sizes.root_used_bytes, 100 * MIB);
    assert_eq!(
        manifest.work_seed.fingerprint,
        vmdisk::fingerprint(&dir.join(WORK_SEED_DIR)).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("work-seed/.bashrc")).unwrap(),
        "# root's bashrc\n"
    );
    crate::format::check_kernel(&dir.join(KERNEL_FILE)).unwrap();
    crate::format::check_initrd(&dir.join(INITRD_FILE)).unwrap();

    let events = log.events.borrow();
    let begun: Vec<&str> = events
        .iter()
        .filter_map(|e| e.strip_prefix("begin "))
        .collect();
    assert_eq!(begun, STAGES);
    assert!(events.contains(&format!("done resolve kernel: {PACKAGE} {VERSION}")));
    assert!(events.contains(&"done download kernel: downloaded".to_owned()));
    assert!(events.contains(&"done debootstrap: downloaded".to_owned()));
}

#[test]
fn a_second_bootstrap_of_the_same_inputs_downloads_nothing() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    env.run(&Scripted::new(FakeRunner::new()), &Log::default())
        .unwrap();
    std::fs::remove_dir_all(env.image_dir()).unwrap();

    let runner = Scripted::new(FakeRunner::new());
    let log = Log::default();
    env.run(&runner, &log).unwrap();
    let calls = runner.calls();
    assert!(
        !calls.iter().any(|c| c.contains("apt-get download")),
        "{calls:#?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("debootstrap --variant")),
        "{calls:#?}"
    );
    let root = env.staging().join("root");
    assert!(calls.contains(&format!(
        "tar -C {} --numeric-owner --xattrs -xpf {}",
        root.display(),
        env.root_tarball().display()
    )));
    {
        let events = log.events.borrow();
        assert!(events.contains(&"done download kernel: cached".to_owned()));
        assert!(events.contains(&"done debootstrap: installed root cached".to_owned()));
    }
    let manifest = read_manifest(&env.image_dir()).unwrap();
    assert!(manifest.inputs.kernel_cached && manifest.inputs.packages_cached);
    assert!(manifest.inputs.root_cached);

    // Without the installed root, the package tarball still saves the download.
    std::fs::remove_dir_all(env.image_dir()).unwrap();
    std::fs::remove_file(env.root_tarball()).unwrap();
    let runner = Scripted::new(FakeRunner::new());
    let log = Log::default();
    env.run(&runner, &log).unwrap();
    let calls = runner.calls();
    assert!(
        !calls.iter().any(|c| c.contains("--make-tarball")),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|c| c.contains("--unpack-tarball")),
        "{calls:#?}"
    );
    assert!(
        log.events
            .borrow()
            .contains(&"done debootstrap: packages cached".to_owned())
    );
    assert!(
        env.root_tarball().is_file(),
        "the installed root is cached again"
    );

    // Another suite is another key.
    let mut other = env.spec.clone();
    other.suite = "trixie".into();
    assert_ne!(other.cache_key(), env.spec.cache_key());
}

#[test]
fn without_root_every_step_on_the_root_filesystem_goes_through_sudo() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    let runner = Scripted::new(FakeRunner::new());
    bootstrap(
        "0123456789abcdef",
        &env.spec,
        &env.host(&runner, Privilege::Sudo),
        &env.image_dir(),
        &Log::default(),
    )
    .unwrap();
    let expected: Vec<String> = env
        .cold_calls()
        .into_iter()
        .map(|c| {
            let privileged = [
                "debootstrap --variant",
                "rm ",
                "cp ",
                "mkdir ",
                "chroot ",
                "du ",
                "mkfs.ext4 ",
                "tar ",
            ];
            if privileged.iter().any(|p| c.starts_with(p)) {
                format!("sudo -n {c}")
            } else {
                c
            }
        })
        .collect();
    assert_eq!(normalized(runner.calls()), expected);
}

/// Every command of a bootstrap, failed in turn: the error names the step and nothing but
/// the cache remains.
#[test]
fn a_failure_at_any_command_removes_the_staging_and_image_directories() {
    if !mkfs_available() {
        return;
    }
    let cases: &[(Matcher, usize, &str)] = &[
        (
            Matcher::prefix("apt-cache", ["depends"]),
            1,
            "resolving the kernel package",
        ),
        (
            Matcher::prefix("apt-cache", ["show"]),
            1,
            "resolving the kernel package",
        ),
        (Matcher::program("sh"), 1, "downloading the kernel package"),
        (
            Matcher::prefix("debootstrap", ["--version"]),
            1,
            "debootstrap --version",
        ),
        (
            Matcher::prefix("debootstrap", ["--variant=minbase"]),
            1,
            "downloading the packages (debootstrap --make-tarball)",
        ),
        (
            Matcher::prefix("debootstrap", ["--variant=minbase"]),
            2,
            "installing the root filesystem (debootstrap)",
        ),
        (Matcher::program("rm"), 1, "cleaning up the root filesystem"),
        (Matcher::program("cp"), 1, "installing banger's guest files"),
        (
            Matcher::program("dpkg-deb"),
            1,
            "unpacking the kernel package",
        ),
        (
            Matcher::program("mkdir"),
            1,
            "installing the kernel's modules",
        ),
        (Matcher::program("cp"), 2, "installing the kernel's modules"),
        (
            Matcher::program("chroot"),
            1,
            "indexing the kernel's modules (depmod)",
        ),
        (Matcher::program("du"), 1, "measuring the root filesystem"),
        (
            Matcher::program("mkfs.ext4"),
            1,
            "making rootfs.ext4 (mkfs.ext4 -d)",
        ),
    ];
    for (matcher, nth, step) in cases {
        let env = Env::new();
        let runner = Scripted::new(FakeRunner::new().fail_nth(matcher.clone(), *nth, "boom"));
        let err = env.run(&runner, &Log::default()).unwrap_err();
        match &err {
            BootstrapError::Command { step: got, .. } => assert_eq!(got, step),
            other => panic!("{step}: {other}"),
        }
        assert!(
            crate::error_chain(&err).contains("boom"),
            "{}",
            crate::error_chain(&err)
        );
        assert_rolled_back(&env, &runner);
        if *nth == 1 && step.contains("make-tarball") {
            assert!(!env.tarball().exists(), "a failed download is not cached");
        }
    }
}

#[test]
fn a_root_cache_that_cannot_be_written_costs_only_speed() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    let runner = Scripted::new(FakeRunner::new().fail_nth(
        Matcher::program("tar"),
        1,
        "No space left on device",
    ));
    env.run(&runner, &Log::default()).unwrap();
    assert!(!env.root_tarball().exists());
    let left: Vec<_> = std::fs::read_dir(env.tmp.path().join("cache/rootfs"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "a partial root tarball was left: {left:?}");
}

#[test]
fn a_broken_root_cache_fails_and_rolls_back() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    env.run(&Scripted::new(FakeRunner::new()), &Log::default())
        .unwrap();
    std::fs::remove_dir_all(env.image_dir()).unwrap();
    let runner = Scripted::new(FakeRunner::new().fail_nth(
        Matcher::program("tar"),
        1,
        "tar: Unexpected EOF in archive",
    ));
    let err = env.run(&runner, &Log::default()).unwrap_err();
    assert!(
        matches!(&err, BootstrapError::Command { step, .. } if *step == "unpacking the cached root filesystem"),
        "{err}"
    );
    assert_rolled_back(&env, &runner);
}

#[test]
fn a_failure_outside_commands_rolls_back_too() {
    if !mkfs_available() {
        return;
    }
    // A kernel package whose vmlinuz is not a kernel.
    let env = Env::new();
    let mut runner = Scripted::new(FakeRunner::new());
    runner.vmlinuz = b"not a kernel".to_vec();
    let err = env.run(&runner, &Log::default()).unwrap_err();
    assert!(matches!(err, BootstrapError::Kernel(_)), "{err}");
    assert_rolled_back(&env, &runner);

    // A kernel without a module the guest needs.
    let env = Env::new();
    let mut runner = Scripted::new(FakeRunner::new());
    runner.builtin.retain(|m| *m != "virtio_blk");
    let err = env.run(&runner, &Log::default()).unwrap_err();
    assert!(matches!(err, BootstrapError::Initramfs(_)), "{err}");
    assert!(
        crate::error_chain(&err).contains("virtio_blk"),
        "{}",
        crate::error_chain(&err)
    );
    assert_rolled_back(&env, &runner);

    // An init binary that went missing.
    let env = Env::new();
    std::fs::remove_file(&env.spec.init_binary).unwrap();
    let runner = Scripted::new(FakeRunner::new());
    let err = env.run(&runner, &Log::default()).unwrap_err();
    assert!(matches!(err, BootstrapError::Initramfs(_)), "{err}");
    assert_rolled_back(&env, &runner);
}

#[test]
fn cancelling_after_any_stage_rolls_back() {
    if !mkfs_available() {
        return;
    }
    for stage in STAGES {
        let env = Env::new();
        let runner = Scripted::new(FakeRunner::new());
        let log = Log::default();
        log.cancel_after.set(Some(stage));
        let err = env.run(&runner, &log).unwrap_err();
        assert!(matches!(err, BootstrapError::Cancelled), "{stage}: {err}");
        assert_rolled_back(&env, &runner);
    }
}

#[test]
fn cancelling_during_debootstrap_stops_it_and_rolls_back() {
    if !mkfs_available() {
        return;
    }
    for during in ["--make-tarball=", "--unpack-tarball="] {
        let env = Env::new();
        let mut runner = Scripted::new(FakeRunner::new());
        runner.cancel_during = Some(during);
        let err = env.run(&runner, &Log::default()).unwrap_err();
        assert!(matches!(err, BootstrapError::Cancelled), "{during}: {err}");
        let calls = runner.calls();
        let at = calls
            .iter()
            .position(|c| c.contains(during))
            .expect("debootstrap ran");
        assert!(
            calls[at + 1..]
                .iter()
                .all(|c| !c.starts_with("debootstrap") && !c.starts_with("mkfs")),
            "{during}: nothing runs after the cancelled step but the cleanup: {calls:?}"
        );
        assert_rolled_back(&env, &runner);
    }
}

#[test]
fn leftover_mounts_in_the_staging_directory_are_unmounted_before_removal() {
    if !mkfs_available() {
        return;
    }
    let env = Env::new();
    let staging = env.staging();
    std::fs::write(
        env.tmp.path().join("mounts"),
        format!(
            "proc /proc proc rw 0 0\nproc {s}/root/proc proc rw 0 0\nsysfs {s}/root/sys sysfs rw 0 0\n\
             devpts {s}/root/dev/pts devpts rw 0 0\n",
            s = staging.display()
        ),
    )
    .unwrap();
    let runner = Scripted::new(FakeRunner::new().fail_nth(
        Matcher::program("mkfs.ext4"),
        1,
        "no space left",
    ));
    env.run(&runner, &Log::default()).unwrap_err();
    let calls = runner.calls();
    let s = staging.display();
    assert_eq!(
        calls[calls.len() - 4..],
        [
            format!("umount -l {s}/root/dev/pts"),
            format!("umount -l {s}/root/proc"),
            format!("umount -l {s}/root/sys"),
            format!("rm -rf --one-file-system -- {s}"),
        ]
    );
}

#[test]
fn stale_staging_directories_are_removed_with_their_leftover_mounts() {
    let env = Env::new();
    let runner = Scripted::new(FakeRunner::new());
    let host = env.host(&runner, Privilege::Sudo);
    assert!(
        remove_stale_staging(&host).unwrap().is_empty(),
        "no staging dir yet"
    );

    let staging = env.tmp.path().join("staging");
    for dir in [
        "bootstrap-aaaa/root/proc",
        "bootstrap-bbbb/root",
        "unrelated",
    ] {
        std::fs::create_dir_all(staging.join(dir)).unwrap();
    }
    std::fs::write(
        env.tmp.path().join("mounts"),
        format!(
            "proc {}/bootstrap-aaaa/root/proc proc rw 0 0\n",
            staging.display()
        ),
    )
    .unwrap();
    let removed = remove_stale_staging(&host).unwrap();
    assert_eq!(
        removed,
        [
            staging.join("bootstrap-aaaa"),
            staging.join("bootstrap-bbbb")
        ]
    );
    let s = staging.display();
    assert_eq!(
        runner.calls(),
        [
            format!("sudo -n umount -l {s}/bootstrap-aaaa/root/proc"),
            format!("sudo -n rm -rf --one-file-system -- {s}/bootstrap-aaaa"),
            format!("sudo -n rm -rf --one-file-system -- {s}/bootstrap-bbbb"),
        ]
    );
    assert!(staging.join("unrelated").exists());
}

#[test]
fn an_existing_image_directory_is_left_alone() {
    let env = Env::new();
    std::fs::create_dir_all(env.image_dir()).unwrap();
    std::fs::write(env.image_dir().join("keep"), "x").unwrap();
    let runner = Scripted::new(FakeRunner::new());
    let err = env.run(&runner, &Log::default()).unwrap_err();
    assert!(matches!(err, BootstrapError::Exists { .. }), "{err}");
    assert!(env.image_dir().join("keep").exists());
    assert!(runner.calls().is_empty());
}

#[test]
fn the_agent_hook_runs_when_an_agent_is_given() {
    if !mkfs_available() {
        return;
    }
    let mut env = Env::new();
    let agent = env.tmp.path().join("banger-agent");
    std::fs::write(&agent, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.spec.agent_binary = Some(agent.clone());
    let runner = Scripted::new(FakeRunner::new());
    env.run(&runner, &Log::default()).unwrap();
    let root = env.staging().join("root");
    let calls = runner.calls();
    let cp = calls.iter().position(|c| c.starts_with("cp ")).unwrap();
    assert_eq!(
        calls[cp + 1..cp + 3],
        [
            format!(
                "install -D -m 0755 {} {}/usr/local/sbin/banger-agent",
                agent.display(),
                root.display()
            ),
            format!("tee -a {}/etc/inittab", root.display()),
        ]
    );
    assert!(read_manifest(&env.image_dir()).unwrap().inputs.agent);
}

#[test]
fn errors_carry_hints() {
    let missing = BootstrapError::Command {
        step: "debootstrap",
        source: RunError::NotFound {
            program: "debootstrap".into(),
        },
    };
    assert_eq!(
        missing.hint().as_deref(),
        Some("install it: apt-get install debootstrap")
    );

    let sudo = BootstrapError::Command {
        step: "making rootfs.ext4",
        source: RunError::Failed {
            command: "sudo -n mkfs.ext4".into(),
            code: Some(1),
            stderr: "sudo: a password is required".into(),
        },
    };
    assert!(sudo.hint().unwrap().contains("sudo -n"));
    let text = crate::error_chain(&sudo);
    assert!(text.contains("sudo: a password is required"), "{text}");
}

#[test]
fn rootfs_sizes_have_headroom_and_round_to_64_mib() {
    assert_eq!(rootfs_size(0), 256 * MIB);
    assert_eq!(rootfs_size(200 * MIB), 512 * MIB);
    assert_eq!(rootfs_size(201 * MIB), 512 * MIB);
    let used = 300 * MIB;
    assert!(rootfs_size(used) >= used + used / 4 + 256 * MIB);
    assert_eq!(rootfs_size(used) % (64 * MIB), 0);
}
