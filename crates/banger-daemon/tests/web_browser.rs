//! The web console in a real browser: Debian's headless `chromium`, driven by playwright-core
//! (`tests/browser/console.mjs`), against a real daemon with temporary XDG directories and the
//! console on a free port. CI installs both (`.ci/run`); without them the test says SKIP.

use std::path::{Path, PathBuf};

use banger_api::paths::Paths;
use banger_api::{Client, OperationKind, OperationState, RegisterImageRequest};
use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};

const CHROMIUM: &str = "/usr/bin/chromium";

fn fake_vmlinux() -> Vec<u8> {
    let mut elf = vec![0u8; 4096];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // ELF version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    let banner = b"Linux version 6.1.0-banger-test (test@banger) #1 SMP";
    elf[1024..1024 + banner.len()].copy_from_slice(banner);
    elf
}

/// Registers an image named `name` from a fake vmlinux and a real (tiny) ext4 rootfs.
async fn register(client: &Client, files: &Path, name: &str) {
    std::fs::create_dir_all(files).unwrap();
    let kernel = files.join("vmlinux");
    std::fs::write(&kernel, fake_vmlinux()).unwrap();
    let rootfs = files.join("rootfs.ext4");
    std::fs::File::create(&rootfs)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    RealRunner
        .run(&CommandSpec::new("mkfs.ext4").args(["-q", "-F", rootfs.to_str().unwrap()]))
        .unwrap();
    let op = client
        .register_image(&RegisterImageRequest {
            name: name.into(),
            kernel: kernel.display().to_string(),
            initrd: None,
            rootfs: rootfs.display().to_string(),
        })
        .await
        .unwrap();
    let done = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_headless_chromium() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !Path::new(CHROMIUM).exists() || !browser_dir.join("node_modules/playwright-core").is_dir() {
        println!("SKIP: chromium/playwright-core not installed (run .ci/run)");
        return;
    }
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
    let info = client.daemon_info().await.unwrap();
    assert!(
        info.web.url.is_some(),
        "console not serving: {:?}",
        info.web
    );
    let files = dir.path().join("files");
    register(&client, &files, "base").await;
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
    println!("web console screenshot: {}", screenshot.display());
}
