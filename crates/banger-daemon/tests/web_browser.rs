//! The web console in a real browser: Debian's headless `chromium`, driven by playwright-core
//! (`tests/browser/console.mjs`), against a real daemon with temporary XDG directories and the
//! console on a free port. CI installs both (`.ci/run`); without them the test says SKIP. The
//! daemon's Firecracker binary does not exist, so VM starts fail alike everywhere; its image
//! builds are stand-ins that run until cancelled, after the real build service's checks.

use std::path::{Path, PathBuf};

use banger_api::{Client, OperationKind, OperationState};
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};

const CHROMIUM: &str = "/usr/bin/chromium";

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new(CHROMIUM).exists() || !browser_dir.join("node_modules/playwright-core").is_dir() {
        banger_test_support::skip!("chromium/playwright-core not installed (run .ci/run)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A Firecracker that does not exist: a start fails the same way on every machine, which
    // is what the browser checks the console shows.
    let paths = support::home(
        dir.path(),
        "vmm = \"firecracker\"\nfirecracker_bin = \"/nonexistent/fc\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
    );
    let daemon = banger_daemon::start(paths).await.unwrap();
    let client = Client::new(daemon.socket());
    let info = client.daemon_info().await.unwrap();
    assert!(
        info.web.url.is_some(),
        "console not serving: {:?}",
        info.web
    );
    let files = dir.path().join("files");
    support::register(&client, &files, "base", false).await;
    // A long operation for the browser to watch (its bar moves as the page polls) and cancel.
    let slow = daemon
        .daemon
        .ops
        .spawn(OperationKind::RegisterImage, "slow", &["wait"], |cx| {
            cx.begin("wait");
            for step in 0..600 {
                cx.check_cancelled()?;
                cx.progress("wait", step, 600, "steps");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(serde_json::Value::Null)
        });
    // The build form's submission goes through the real build service's checks, then starts
    // a stand-in for the build's operation that runs until cancelled: no build VM boots here.
    daemon.daemon.web.set_build(std::sync::Arc::new(|d, req| {
        banger_daemon::build::check(d, req)?;
        let name = req.recipe.name.clone().unwrap_or_default();
        Ok(d.ops.spawn(
            OperationKind::BuildImage,
            &name,
            &["check cache", "boot"],
            |cx| {
                cx.begin("boot");
                for _ in 0..1200 {
                    cx.check_cancelled()?;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Ok(serde_json::Value::Null)
            },
        ))
    }));
    let login = client.web_login().await.unwrap();

    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-console.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = browser_dir.join("console.mjs");
    let command = CommandSpec::new("node").args([
        script.to_str().unwrap(),
        &login.url,
        screenshot.to_str().unwrap(),
        "base",
        files.to_str().unwrap(),
    ]);
    // The browser talks to the daemon in this runtime: wait for it off the async workers.
    let outcome = tokio::task::spawn_blocking(move || RealRunner.run(&command))
        .await
        .unwrap();
    let slow = daemon.daemon.ops.get(&slow.id).unwrap();
    let builds: Vec<_> = daemon
        .daemon
        .ops
        .list()
        .into_iter()
        .filter(|op| op.kind == OperationKind::BuildImage)
        .collect();
    daemon.stop().await;
    match outcome {
        Ok(output) => print!("{}", output.stdout_lossy()),
        Err(e) => panic!("the browser test failed: {e}"),
    }
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    assert_eq!(
        slow.state,
        OperationState::Cancelled,
        "the Cancel button did not cancel"
    );
    assert_eq!(
        builds.len(),
        1,
        "one build, from the valid form: {builds:?}"
    );
    assert_eq!(builds[0].target, "browser-built");
    assert_eq!(
        builds[0].state,
        OperationState::Cancelled,
        "the build's Cancel button did not cancel"
    );
    println!("web console screenshot: {}", screenshot.display());
}
