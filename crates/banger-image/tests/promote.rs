//! `promote` on real ext4 images, real loop mounts and the kernel's overlayfs (as root, like
//! bangerd): an image's root with a VM's overlay on top becomes a new image that has what the
//! VM changed (new files, deleted files, a directory replaced whole) and nothing that made
//! the VM itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use banger_api::{
    Image, ImageFile, ImageFiles, ImageManifest, ImageSource, ServiceCheck, Timestamp,
};
use banger_host::{CommandRunner, CommandSpec, RealRunner};
use banger_image::bootstrap::Host;
use banger_image::promote::{self, PromoteSources, PromoteSpec};
use banger_image::register::Reporter;

#[derive(Default)]
struct Stages {
    seen: Mutex<Vec<String>>,
    cancel_at: Option<&'static str>,
}

impl Reporter for Stages {
    fn begin(&self, stage: &str) {
        self.seen.lock().unwrap().push(stage.to_owned());
    }
    fn progress(&self, _: &str, _: u64, _: u64) {}
    fn done(&self, _: &str, _: Option<String>) {}
    fn skip(&self, _: &str, _: &str) {}
    fn cancelled(&self) -> bool {
        self.cancel_at
            .is_some_and(|stage| self.seen.lock().unwrap().iter().any(|s| s == stage))
    }
}

fn run(program: &str, args: &[&str]) -> String {
    RealRunner
        .run(&CommandSpec::new(program).args(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
        .stdout_lossy()
}

fn write(path: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// An ext4 image of `size_mib` made from `dir`.
fn ext4(dir: &Path, image: &Path, size_mib: u64) {
    let file = std::fs::File::create(image).unwrap();
    file.set_len(size_mib << 20).unwrap();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            &dir.display().to_string(),
            &image.display().to_string(),
        ],
    );
}

/// What `debugfs cat` reads of `path` in `image`, or `None` when it is not there.
fn cat(image: &Path, path: &str) -> Option<String> {
    let out = RealRunner
        .run(
            &CommandSpec::new("debugfs")
                .arg("-R")
                .arg(format!("stat {path}"))
                .arg(image.display().to_string()),
        )
        .unwrap();
    if out.stderr_lossy().contains("File not found") {
        return None;
    }
    Some(run(
        "debugfs",
        &["-R", &format!("cat {path}"), &image.display().to_string()],
    ))
}

fn ls(image: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = run(
        "debugfs",
        &["-R", &format!("ls -p {dir}"), &image.display().to_string()],
    )
    .lines()
    .filter_map(|l| l.split('/').nth(5).map(str::to_owned))
    .filter(|n| !n.is_empty() && n != "." && n != "..")
    .collect();
    names.sort();
    names
}

struct Fixture {
    _dir: tempfile::TempDir,
    base_dir: PathBuf,
    base: Image,
    overlay: PathBuf,
    work: PathBuf,
    staging_parent: PathBuf,
    images: PathBuf,
}

impl Fixture {
    /// The VM's disks on the fixture's image, its work disk included.
    fn sources(&self) -> PromoteSources<'_> {
        PromoteSources {
            base: &self.base,
            base_dir: &self.base_dir,
            overlay: &self.overlay,
            work: Some(&self.work),
        }
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The image's root.
    let root = d.join("base-root");
    write(&root.join("etc/hostname"), "debian\n");
    write(&root.join("etc/keep"), "kept\n");
    write(&root.join("etc/gone"), "deleted by the VM\n");
    write(&root.join("srv/old/a"), "replaced\n");
    write(&root.join("etc/machine-id"), "");
    write(
        &root.join("var/lib/dpkg/status"),
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n",
    );
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let base_dir = d.join("images/base");
    std::fs::create_dir_all(&base_dir).unwrap();
    ext4(&root, &base_dir.join("rootfs.ext4"), 32);
    std::fs::write(base_dir.join("vmlinux"), b"kernel").unwrap();
    std::fs::write(base_dir.join("initrd"), b"initrd").unwrap();
    write(&base_dir.join("work-seed/.profile"), "# base seed\n");

    // The VM's overlay: what the VM changed, and its own files.
    let ovl = d.join("overlay-tree");
    let upper = ovl.join("upper");
    write(&upper.join("etc/hostname"), "dev\n");
    write(&upper.join("etc/banger/agent-token"), "secret\n");
    write(&upper.join("etc/banger/network"), "address=172.30.0.2/24\n");
    write(&upper.join("etc/ssh/ssh_host_ed25519_key"), "private\n");
    write(&upper.join("etc/machine-id"), "0123456789abcdef\n");
    write(&upper.join("etc/added"), "added by the VM\n");
    write(&upper.join("srv/old/b"), "the new contents\n");
    write(&upper.join("tmp/junk"), "scratch\n");
    write(
        &upper.join("var/lib/dpkg/status"),
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n\n\
         Package: git\nStatus: install ok installed\nVersion: 1:2.39.5-0+deb12u2\nArchitecture: amd64\n\n",
    );
    std::fs::create_dir_all(ovl.join("work")).unwrap();
    // A whiteout (the VM deleted etc/gone) and an opaque directory (it replaced srv/old).
    run(
        "mknod",
        &[&upper.join("etc/gone").display().to_string(), "c", "0", "0"],
    );
    rustix::fs::setxattr(
        upper.join("srv/old"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let overlay = d.join("overlay.ext4");
    ext4(&ovl, &overlay, 32);

    let work_tree = d.join("work-tree");
    write(&work_tree.join(".profile"), "# the VM's own\n");
    write(&work_tree.join("project/README"), "hello\n");
    let work = d.join("work.ext4");
    ext4(&work_tree, &work, 32);

    let stored = |p: PathBuf| ImageFile {
        path: p.display().to_string(),
        bytes: 1,
        allocated_bytes: 1,
    };
    let base = Image {
        id: "base0000".into(),
        name: "base".into(),
        source: ImageSource::Bootstrapped,
        files: ImageFiles {
            kernel: stored(base_dir.join("vmlinux")),
            initrd: Some(stored(base_dir.join("initrd"))),
            rootfs: stored(base_dir.join("rootfs.ext4")),
        },
        manifest: ImageManifest {
            name: "base".into(),
            distro: Some("debian".into()),
            suite: Some("bookworm".into()),
            kernel_version: Some("6.1.0".into()),
            packages: Vec::new(),
            services: vec![ServiceCheck {
                name: "ssh".into(),
                port: 22,
                timeout_secs: None,
                http: None,
            }],
            publish: Vec::new(),
            init_features: vec!["config-drive".into()],
            created_from: "a test".into(),
            created_at: Timestamp::now(),
            imported_from: None,
        },
        created_at: Timestamp::now(),
        retired: None,
    };
    Fixture {
        base_dir,
        base,
        overlay,
        work,
        staging_parent: d.join("staging"),
        images: d.join("images"),
        _dir: dir,
    }
}

fn spec(name: &str) -> PromoteSpec {
    PromoteSpec {
        name: name.into(),
        source: ImageSource::Promoted,
        created_from: "VM dev".into(),
        services: Vec::new(),
        publish: vec![4096],
        recipe: None,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn a_vms_root_becomes_an_image_without_what_made_it_that_vm() {
    if !is_root() {
        banger_test_support::skip!("promote mounts loop devices and needs root, as bangerd runs");
        return;
    }
    let f = fixture();
    let host = Host::new(
        &RealRunner,
        PathBuf::from("/nonexistent"),
        f.staging_parent.clone(),
    );
    let dir = f.images.join("new");
    let sources = f.sources();
    let reporter = Stages::default();
    let image = promote::promote(
        "new0000",
        &sources,
        &spec("dev-image"),
        &host,
        &dir,
        &reporter,
    )
    .unwrap();
    assert_eq!(*reporter.seen.lock().unwrap(), promote::STAGES.to_vec());
    assert_eq!(image.source, ImageSource::Promoted);
    let rootfs = dir.join("rootfs.ext4");
    assert_eq!(image.files.rootfs.path, rootfs.display().to_string());

    // What the VM changed is there...
    assert_eq!(
        cat(&rootfs, "/etc/added").as_deref(),
        Some("added by the VM\n")
    );
    assert_eq!(cat(&rootfs, "/etc/keep").as_deref(), Some("kept\n"));
    assert_eq!(cat(&rootfs, "/etc/gone"), None, "a whiteout deletes");
    assert_eq!(
        ls(&rootfs, "/srv/old"),
        ["b"],
        "an opaque directory replaces"
    );
    // ...what made it that VM is not, and the image's own versions are back.
    assert_eq!(cat(&rootfs, "/etc/hostname").as_deref(), Some("debian\n"));
    assert_eq!(cat(&rootfs, "/etc/machine-id").as_deref(), Some(""));
    assert_eq!(cat(&rootfs, "/etc/banger/agent-token"), None);
    assert_eq!(cat(&rootfs, "/etc/banger/network"), None);
    assert_eq!(cat(&rootfs, "/etc/ssh/ssh_host_ed25519_key"), None);
    assert!(ls(&rootfs, "/tmp").is_empty());

    // The work disk became the work seed; the boot set is the base's; the manifest says so.
    let seed = dir.join("work-seed");
    assert_eq!(
        std::fs::read_to_string(seed.join("project/README")).unwrap(),
        "hello\n"
    );
    assert!(!seed.join("lost+found").exists());
    assert_eq!(
        std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(std::fs::read(dir.join("vmlinux")).unwrap(), b"kernel");
    assert_eq!(std::fs::read(dir.join("initrd")).unwrap(), b"initrd");
    assert_eq!(
        image
            .manifest
            .packages
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["base-files", "git"]
    );
    assert_eq!(image.manifest.publish, [4096]);
    assert_eq!(image.manifest.services, f.base.manifest.services);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["derived_from"]["base_image"], "base");
    assert_eq!(manifest["derived_from"]["work_seed_from_vm"], true);
    assert_eq!(
        manifest["work_seed"]["fingerprint"],
        banger_image::vmdisk::fingerprint(&seed).unwrap()
    );

    // Nothing stays mounted or staged; the VM's disks are as they were.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("banger-promote"), "{mounts}");
    assert_eq!(std::fs::read_dir(&f.staging_parent).unwrap().count(), 0);
    assert_eq!(
        cat(&f.overlay, "/upper/etc/hostname").as_deref(),
        Some("dev\n")
    );
    let loops = run("losetup", &["-a"]);
    assert!(!loops.contains(&f.overlay.display().to_string()), "{loops}");

    // Without the work disk, the base image's seed is kept.
    let dir2 = f.images.join("new2");
    let sources = PromoteSources {
        work: None,
        ..sources
    };
    promote::promote(
        "new0001",
        &sources,
        &spec("dev-image-2"),
        &host,
        &dir2,
        &Stages::default(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir2.join("work-seed/.profile")).unwrap(),
        "# base seed\n"
    );
}

#[test]
fn a_failed_or_cancelled_promotion_leaves_nothing() {
    if !is_root() {
        banger_test_support::skip!("promote mounts loop devices and needs root, as bangerd runs");
        return;
    }
    let f = fixture();
    let host = Host::new(
        &RealRunner,
        PathBuf::from("/nonexistent"),
        f.staging_parent.clone(),
    );
    for stage in promote::STAGES {
        let dir = f
            .images
            .join(format!("cancelled-{}", stage.replace(' ', "-")));
        let sources = f.sources();
        let reporter = Stages {
            cancel_at: Some(stage),
            ..Stages::default()
        };
        let err = promote::promote("x", &sources, &spec("x"), &host, &dir, &reporter).unwrap_err();
        assert!(
            matches!(err, banger_image::bootstrap::BootstrapError::Cancelled),
            "{stage}: {err}"
        );
        assert!(!dir.exists(), "{stage}: the image directory stayed");
        assert_eq!(
            std::fs::read_dir(&f.staging_parent).unwrap().count(),
            0,
            "{stage}: staging stayed"
        );
    }
    // A broken overlay disk fails the merge; nothing stays either.
    let broken = f.images.join("broken.ext4");
    std::fs::write(&broken, vec![0u8; 1 << 20]).unwrap();
    let dir = f.images.join("broken");
    let sources = PromoteSources {
        overlay: &broken,
        work: None,
        ..f.sources()
    };
    let err =
        promote::promote("y", &sources, &spec("y"), &host, &dir, &Stages::default()).unwrap_err();
    assert!(err.to_string().contains("checking the VM's disks"), "{err}");
    assert!(!dir.exists());
    assert_eq!(std::fs::read_dir(&f.staging_parent).unwrap().count(), 0);
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("banger-promote"), "{mounts}");
}
