//! `POST /v1/images/bootstrap` on a real bangerd (in-process, temporary socket and XDG
//! directories): bad requests are refused before any operation starts, the route does not
//! shadow an image named `bootstrap`, and — where the host can (root, debootstrap, apt, the
//! Debian mirror or a filled cache) — a whole bootstrap runs as an operation with the named
//! stages the CLI prints, leaving an image the store lists.

use std::path::PathBuf;

use banger_api::{
    BootstrapImageRequest, Client, ErrorCode, ImageSource, OperationKind, OperationState,
    StageState,
};
use banger_daemon::RunningDaemon;

mod support;

struct Harness {
    /// Dropped first: the state directory's own small filesystem, when the test has one.
    _small_disk: Option<support::SmallDisk>,
    dir: tempfile::TempDir,
    daemon: Option<RunningDaemon>,
    client: Client,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_on(None).await
    }

    /// A daemon whose state directory is `small_disk`, when given.
    async fn start_on(small_disk: Option<support::SmallDisk>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let small_disk = small_disk.map(|d| d.mount(&dir.path().join("state/banger")));
        let paths = support::home(dir.path(), "[web]\nlisten = \"127.0.0.1:0\"\n");
        let daemon = banger_daemon::start(paths).await.unwrap();
        let client = Client::new(daemon.socket());
        Harness {
            _small_disk: small_disk,
            dir,
            daemon: Some(daemon),
            client,
        }
    }

    /// Starts a bootstrap of Debian named `base`, or prints `SKIP:` and stops the daemon when
    /// this host cannot bootstrap.
    async fn start_bootstrap(&mut self) -> Option<banger_api::Operation> {
        match self
            .client
            .bootstrap_image(&request("debian", None, Some("base")))
            .await
        {
            Ok(op) => Some(op),
            Err(e) if e.is_code(ErrorCode::Unavailable) => {
                banger_test_support::skip!("the host cannot bootstrap: {e}");
                self.stop().await;
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Whether bootstrap `done` failed at its first stage, apt not resolving the kernel
    /// package (no mirror, no cache): then it prints `SKIP:` and stops the daemon.
    async fn could_not_resolve(&mut self, done: &banger_api::Operation) -> bool {
        if done.state == OperationState::Failed && done.stages[0].state == StageState::Failed {
            banger_test_support::skip!("apt cannot resolve the kernel package: {:?}", done.error);
            self.stop().await;
            return true;
        }
        false
    }

    /// Shares the test download cache (outside the repository, keyed by inputs like
    /// banger's) with this daemon.
    fn share_download_cache(&self) {
        let cache = std::env::var_os("BANGER_TEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
        std::fs::create_dir_all(cache.join("bootstrap")).unwrap();
        std::fs::create_dir_all(self.state_dir().join("cache")).unwrap();
        std::os::unix::fs::symlink(
            cache.join("bootstrap"),
            self.state_dir().join("cache/bootstrap"),
        )
        .unwrap();
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state/banger")
    }

    async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }
}

fn request(distro: &str, suite: Option<&str>, name: Option<&str>) -> BootstrapImageRequest {
    BootstrapImageRequest {
        distro: distro.into(),
        suite: suite.map(Into::into),
        name: name.map(Into::into),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bootstrap_requests_are_refused_before_any_operation() {
    let mut h = Harness::start().await;
    let cases = [
        (
            request("ubuntu", None, None),
            ErrorCode::InvalidInput,
            "cannot bootstrap",
        ),
        (
            request("debian", Some("../../etc"), None),
            ErrorCode::InvalidInput,
            "not a Debian suite",
        ),
        (
            request("debian", None, Some("Bad_Name")),
            ErrorCode::InvalidInput,
            "contains",
        ),
    ];
    for (req, code, needle) in cases {
        let err = h.client.bootstrap_image(&req).await.unwrap_err();
        let api = err.api().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(api.code, code, "{api:?}");
        assert!(api.message.contains(needle), "{needle}: {}", api.message);
        assert!(api.hint.is_some(), "{api:?}");
    }

    // A taken name.
    support::register(&h.client, &h.dir.path().join("files"), "debian", false).await;
    let err = h
        .client
        .bootstrap_image(&request("debian", None, None))
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::AlreadyExists), "{err}");

    // Unknown fields are refused, not ignored.
    let err = h
        .client
        .raw(
            hyper::Method::POST,
            "/v1/images/bootstrap",
            Some(br#"{"distro":"debian","mirror":"http://example.invalid"}"#.to_vec()),
        )
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidInput), "{err}");

    let ops = h.client.list_operations().await.unwrap();
    assert!(
        ops.iter()
            .all(|op| op.kind != OperationKind::BootstrapImage),
        "{ops:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_named_bootstrap_is_still_reachable() {
    let mut h = Harness::start().await;
    support::register(&h.client, &h.dir.path().join("files"), "bootstrap", false).await;
    let image = h.client.get_image("bootstrap").await.unwrap();
    assert_eq!(image.name, "bootstrap");
    h.client.delete_image("bootstrap").await.unwrap();
    assert!(h.client.list_images().await.unwrap().is_empty());

    let doc: serde_json::Value = serde_json::from_slice(
        &h.client
            .raw(hyper::Method::GET, "/v1/openapi.json", None)
            .await
            .unwrap()
            .1,
    )
    .unwrap();
    assert!(
        doc["paths"]["/v1/images/bootstrap"]["post"].is_object(),
        "the route is documented"
    );
    h.stop().await;
}

/// The whole bootstrap through the API. It needs what `banger image bootstrap` needs; the
/// download cache is shared with banger-image's bootstrap test so a warm cache downloads
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_operation_builds_and_records_an_image() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("root not available (debootstrap needs it)");
        return;
    }
    let mut h = Harness::start().await;
    h.share_download_cache();

    let Some(op) = h.start_bootstrap().await else {
        return;
    };
    assert_eq!(op.kind, OperationKind::BootstrapImage);
    let names: Vec<&str> = op.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "resolve kernel",
            "download kernel",
            "debootstrap",
            "clean up root",
            "configure guest",
            "extract kernel",
            "build initramfs",
            "make rootfs",
            "write work seed",
            "write manifest",
            "record"
        ]
    );
    let done = h.client.watch_operation(&op.id, |_| {}).await.unwrap();
    if h.could_not_resolve(&done).await {
        return;
    }
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    assert!(
        done.stages.iter().all(|s| s.state == StageState::Done),
        "{done:#?}"
    );
    let image = h.client.get_image("base").await.unwrap();
    assert_eq!(image.source, ImageSource::Bootstrapped);
    assert_eq!(image.manifest.distro.as_deref(), Some("debian"));
    assert_eq!(image.manifest.suite.as_deref(), Some("bookworm"));
    assert!(image.files.initrd.is_some());
    assert!(
        image
            .manifest
            .packages
            .iter()
            .any(|p| p.name == "openssh-server"),
        "{:?}",
        image.manifest.packages
    );
    let manifest =
        banger_image::bootstrap::read_manifest(&h.state_dir().join("images").join(&image.id))
            .unwrap();
    assert!(
        manifest.inputs.agent,
        "the daemon installs its embedded agent"
    );
    let staging = h.state_dir().join("staging");
    let left: Vec<_> = std::fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    h.stop().await;
}

/// A bootstrap on a full disk, the state directory on a filesystem of its own (a tmpfs of 1.1 GiB;
/// the downloads come from the shared cache, elsewhere). With less than the 1 GiB a bootstrap
/// asks for, it is refused before it starts, as `no_space`. With room to start and the disk
/// filled under it, it fails as `no_space` naming the path, and leaves no image, no staging and
/// no file behind; the daemon serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_on_a_full_disk_fails_with_no_space_and_leaves_nothing() {
    let Some(small) = support::SmallDisk::new(1100 << 20) else {
        return;
    };
    let mut h = Harness::start_on(Some(small)).await;
    h.share_download_cache();
    let state = h.state_dir();
    let filler = h.state_dir().join("filler");
    // Grows the filler until `left` bytes are free (or the disk is full: the bootstrap may be
    // writing at the same time).
    let fill_leaving = |left: u64| {
        use std::io::Write;
        let _ = std::fs::remove_file(&filler);
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![1u8; 1 << 20];
        while support::SmallDisk::free_at(&state) > left + (1 << 20)
            && file.write_all(&chunk).is_ok()
        {}
    };

    fill_leaving(200 << 20);
    let before = support::files_under(&h.state_dir());
    let err = h
        .client
        .bootstrap_image(&request("debian", None, Some("base")))
        .await
        .unwrap_err();
    let api = err.api().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(api.code, ErrorCode::NoSpace, "{api:?}");
    assert!(api.message.contains("need at least 1 GiB"), "{api:?}");
    assert!(h.client.list_operations().await.unwrap().is_empty());
    assert_eq!(support::files_under(&h.state_dir()), before);

    std::fs::remove_file(&filler).unwrap();
    let Some(op) = h.start_bootstrap().await else {
        return;
    };
    // Past the check: the disk fills under the bootstrap.
    fill_leaving(32 << 20);
    let done = h.client.watch_operation(&op.id, |_| {}).await.unwrap();
    if h.could_not_resolve(&done).await {
        return;
    }
    assert_eq!(done.state, OperationState::Failed, "{done:#?}");
    let error = done.error.unwrap();
    println!(
        "bootstrap on a full disk: {}",
        error.message.lines().next().unwrap_or_default()
    );
    assert_eq!(error.code, ErrorCode::NoSpace, "{error:?}");
    assert!(
        error.message.contains(&h.state_dir().display().to_string()),
        "the message names the path: {error:?}"
    );
    assert!(h.client.list_images().await.unwrap().is_empty());
    // What every bootstrap shares may stay, empty: the images' and the staging directories.
    let after: Vec<String> = support::files_under(&h.state_dir())
        .into_iter()
        .filter(|f| {
            !(["images", "staging"].contains(&f.as_str())
                && std::fs::read_dir(h.state_dir().join(f))
                    .unwrap()
                    .next()
                    .is_none())
        })
        .collect();
    assert_eq!(after, before, "nothing of the bootstrap stays");
    // It still serves.
    h.client.list_operations().await.unwrap();
    h.stop().await;
}
