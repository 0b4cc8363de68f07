//! `POST /v1/images/bootstrap` on a real bangerd (in-process, temporary socket and XDG
//! directories): bad requests are refused before any operation starts, the route does not
//! shadow an image named `bootstrap`, and — where the host can (root, debootstrap, apt, the
//! Debian mirror or a filled cache) — a whole bootstrap runs as an operation with the named
//! stages the CLI prints, leaving an image the store lists.

use std::path::PathBuf;

use banger_api::paths::Paths;
use banger_api::{
    BootstrapImageRequest, Client, ErrorCode, ImageSource, OperationKind, OperationState,
    StageState,
};
use banger_daemon::RunningDaemon;

mod support;

struct Harness {
    dir: tempfile::TempDir,
    daemon: Option<RunningDaemon>,
    client: Client,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_file: dir.path().join("config/banger/config.toml"),
            state_dir: dir.path().join("state/banger"),
            runtime_dir: dir.path().join("run/banger"),
        };
        std::fs::create_dir_all(paths.config_file.parent().unwrap()).unwrap();
        std::fs::write(&paths.config_file, "[web]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let daemon = banger_daemon::start(paths).await.unwrap();
        let client = Client::new(daemon.socket());
        Harness {
            dir,
            daemon: Some(daemon),
            client,
        }
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
        println!("SKIP: root not available (debootstrap needs it)");
        return;
    }
    let mut h = Harness::start().await;
    // Share the test download cache (outside the repository), keyed by inputs like banger's.
    let cache = std::env::var_os("BANGER_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/banger-test"));
    std::fs::create_dir_all(cache.join("bootstrap")).unwrap();
    std::fs::create_dir_all(h.state_dir().join("cache")).unwrap();
    std::os::unix::fs::symlink(
        cache.join("bootstrap"),
        h.state_dir().join("cache/bootstrap"),
    )
    .unwrap();

    let op = match h
        .client
        .bootstrap_image(&request("debian", None, Some("base")))
        .await
    {
        Ok(op) => op,
        Err(e) if e.is_code(ErrorCode::Unavailable) => {
            println!("SKIP: the host cannot bootstrap: {e}");
            h.stop().await;
            return;
        }
        Err(e) => panic!("{e}"),
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
    if done.state == OperationState::Failed && done.stages[0].state == StageState::Failed {
        println!(
            "SKIP: apt cannot resolve the kernel package: {:?}",
            done.error
        );
        h.stop().await;
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
