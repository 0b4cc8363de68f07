//! `banger image build` and `banger image promote` with real guests (QEMU under TCG, in a
//! network namespace the test creates, like `e2e_qemu.rs`): a recipe with packages, files, a
//! script, a command and a service builds an image whose VMs show every effect; the same
//! inputs come from the cache; a failing script fails the build with its output and leaves
//! nothing; so does a daemon killed mid-build, and the next one reports the build failed; a
//! stopped VM's root becomes an image that new VMs boot with.
//!
//! The only network step, the host's download of the recipe's packages, runs first with
//! `--download-only` through a daemon outside the namespace; the build itself then runs in
//! the namespace and needs no network, as a user's build on a machine without internet would.
//! Needs root, QEMU, debootstrap and apt; prints `SKIP:` and passes without them.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use support::netns::E2e;

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Entries of a directory of the sandbox's state, sorted.
fn entries(t: &E2e, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.sandbox.root().join("state/banger").join(dir))
        .map(|read| {
            read.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A tmpfs of its own over a directory of the sandbox's state, mounted in the mount namespace
/// of the daemon `pid` (`ip netns exec` gives each command one of its own, which a mount made
/// outside does not reach), unmounted when dropped (lazily: the daemon may still hold a file
/// in it).
struct SmallStaging {
    pid: u32,
    at: std::path::PathBuf,
}

impl SmallStaging {
    fn mount(pid: u32, at: &Path, size: &str) -> SmallStaging {
        std::fs::create_dir_all(at).unwrap();
        let mounted = SmallStaging {
            pid,
            at: at.to_owned(),
        };
        let out = mounted
            .nsenter(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
            ])
            .expect("mount a tmpfs");
        assert!(out.success(), "mount a tmpfs on {}", at.display());
        mounted
    }

    fn nsenter(
        &self,
        command: &[&str],
    ) -> Result<banger_host::runner::CommandOutput, banger_host::runner::RunError> {
        use banger_host::runner::{CommandRunner, CommandSpec, RealRunner};
        let pid = self.pid.to_string();
        let at = self.at.display().to_string();
        let mut args = vec!["-t", &pid, "-m"];
        args.extend(command);
        args.push(&at);
        RealRunner.run(&CommandSpec::new("nsenter").args(args))
    }

    /// Its entries, as the daemon sees them.
    fn entries(&self) -> Vec<String> {
        let seen =
            Path::new(&format!("/proc/{}/root", self.pid)).join(self.at.strip_prefix("/").unwrap());
        std::fs::read_dir(&seen)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for SmallStaging {
    fn drop(&mut self) {
        let _ = self.nsenter(&["umount", "-l"]);
    }
}

const RECIPE: &str = r#"
name = "tools"
packages = ["jq"]

[[file]]
src = "files/motd"
dest = "/etc/motd"
mode = "0640"

[[file]]
src = "files/hello"
dest = "/usr/local/bin/hello"

[[run]]
script = "setup.sh"

[[run]]
command = "mkdir -p /srv/www && echo served-by-the-image >/srv/www/index.html"

[[service]]
name = "web"
port = 8080
command = "busybox httpd -f -p 8080 -h /srv/www"
timeout = "2m"
"#;

#[test]
fn images_are_built_from_recipes_and_promoted_from_vms() {
    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("apt-get", "--version"),
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("files")).unwrap();
    write(&d.join("files/motd"), "built by banger\n", 0o644);
    write(
        &d.join("files/hello"),
        "#!/bin/sh\necho hello from the image\n",
        0o755,
    );
    write(
        &d.join("setup.sh"),
        "set -e\njq --version >/etc/jq-version\nmkdir -p /root/project\necho seeded >/root/project/README\n",
        0o644,
    );
    let recipe = d.join("tools.toml");
    write(&recipe, RECIPE, 0o644);
    let recipe = recipe.display().to_string();

    // The host downloads what the guest installs, before anything boots.
    let out = t
        .sandbox
        .ok(&["image", "build", "-f", &recipe, "--download-only"]);
    assert!(out.contains("needs no network"), "{out}");
    t.sandbox.ok(&["daemon", "stop"]);

    let started = Instant::now();
    let (code, out, err) = t.banger(&["image", "build", "-f", &recipe]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "image build (cold, packages downloaded): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for stage in [
        "check cache: done",
        "fetch packages: done",
        "boot: done",
        "install packages: done",
        "copy files: done",
        "run scripts: done",
        "set up services: done",
        "shut down: done",
        "merge root: done",
        "make rootfs: done",
        "record: done",
    ] {
        assert!(err.contains(stage), "{stage} not in\n{err}");
    }
    assert!(out.starts_with("Built image tools."), "{out}");
    let image = t.json(&["image", "show", "tools"]);
    assert_eq!(image["source"], "built");
    let services: Vec<(&str, u64)> = image["manifest"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["port"].as_u64().unwrap()))
        .collect();
    assert_eq!(services, [("agent", 1024), ("ssh", 22), ("web", 8080)]);
    assert!(
        image["manifest"]["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "jq"),
        "the manifest lists the installed packages"
    );
    // Where it came from: the base image and the recipe, in the image's manifest.
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            t.sandbox
                .root()
                .join("state/banger/images")
                .join(image["id"].as_str().unwrap())
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let derived = &manifest["derived_from"];
    assert_eq!(derived["base_image"], "debian", "{derived}");
    assert_eq!(
        derived["recipe"]["packages"],
        serde_json::json!(["jq"]),
        "{derived}"
    );
    assert_eq!(derived["work_seed_from_vm"], true, "{derived}");
    // The build VM is gone, and so is the staging.
    assert!(t.json(&["vm", "list"]).as_array().unwrap().is_empty());
    assert!(
        entries(&t, "staging").is_empty(),
        "{:?}",
        entries(&t, "staging")
    );

    // A VM of the image has every effect, and its service answered before create returned.
    t.ok(&["vm", "create", "--name", "b1", "--image", "tools"]);
    let exec = |vm: &str, script: &str| t.ok(&["vm", "exec", vm, "--", "sh", "-c", script]);
    assert!(exec("b1", "jq --version").starts_with("jq-"));
    assert_eq!(
        exec("b1", "cat /etc/motd; stat -c %a /etc/motd"),
        "built by banger\n640\n"
    );
    assert_eq!(exec("b1", "hello"), "hello from the image\n");
    assert!(exec("b1", "cat /etc/jq-version").starts_with("jq-"));
    assert_eq!(exec("b1", "cat /root/project/README"), "seeded\n");
    assert_eq!(
        exec("b1", "busybox wget -qO- http://127.0.0.1:8080/"),
        "served-by-the-image\n"
    );
    assert_eq!(exec("b1", "hostname"), "b1\n");
    // Nothing of the build VM's identity came along.
    assert!(!exec("b1", "cat /etc/hosts").contains("build-tools"));

    // The same inputs under another name: from the cache, nothing boots.
    let started = Instant::now();
    let (code, out, err) = t.banger(&["image", "build", "-f", &recipe, "--name", "tools-again"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "image build (cached): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        err.contains("check cache: done") && err.contains("hit"),
        "{err}"
    );
    assert!(err.contains("boot: skipped: cached"), "{err}");
    assert_eq!(t.json(&["image", "show", "tools-again"])["source"], "built");
    // Built again in its place: the old image, unused, is deleted with its files.
    let again = t.json(&["image", "show", "tools-again"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, out, err) = t.banger(&["image", "build", "-f", &recipe, "--name", "tools-again"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("already exists") && err.contains("--replace"),
        "{err}"
    );
    let out = t.ok(&[
        "image",
        "build",
        "-f",
        &recipe,
        "--name",
        "tools-again",
        "--replace",
    ]);
    assert!(
        out.contains("It replaces the former tools-again, deleted: nothing used it."),
        "{out}"
    );
    assert_ne!(
        t.json(&["image", "show", "tools-again"])["id"],
        again.as_str()
    );
    assert!(!entries(&t, "images").contains(&again));

    // A failing script fails the build with its output; nothing is left.
    let broken = d.join("broken.toml");
    write(
        &broken,
        "name = \"broken\"\n[[run]]\ncommand = \"echo about-to-fail; echo on-stderr >&2; exit 7\"\n",
        0o644,
    );
    let images_before = entries(&t, "images");
    let (code, out, err) = t.banger(&["image", "build", "-f", &broken.display().to_string()]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("run scripts"), "{err}");
    assert!(err.contains("exited with 7"), "{err}");
    assert!(
        err.contains("about-to-fail") && err.contains("on-stderr"),
        "{err}"
    );
    assert_eq!(entries(&t, "images"), images_before);
    assert!(
        t.json(&["vm", "list"]).as_array().unwrap().len() == 1,
        "only b1 is left"
    );
    assert!(entries(&t, "staging").is_empty());
    let (code, _, _) = t.banger(&["image", "show", "broken"]);
    assert_ne!(code, 0);

    // bangerd killed while a build provisions its guest: the next daemon deletes the build's
    // VM and staging, records no image, and reports the build failed in that stage.
    let slow = d.join("slow.toml");
    write(
        &slow,
        "name = \"slow\"\n[[run]]\ncommand = \"sleep 600\"\n",
        0o644,
    );
    let vm_dirs_before = entries(&t, "vms");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = banger_api::Client::new(t.sandbox.root().join("run/banger/bangerd.sock"));
    let pid = t.json(&["daemon", "status"])["pid"].as_u64().unwrap() as u32;
    let (op, cli) = std::thread::scope(|scope| {
        let build =
            scope.spawn(|| t.banger(&["image", "build", "-f", &slow.display().to_string()]));
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        let op = loop {
            let ops = runtime
                .block_on(client.list_operations())
                .unwrap_or_default();
            if let Some(op) = ops.into_iter().find(|op| {
                op.kind == banger_api::OperationKind::BuildImage
                    && op.stages.iter().any(|s| {
                        s.name == "run scripts" && s.state == banger_api::StageState::Running
                    })
            }) {
                break op;
            }
            assert!(
                Instant::now() < deadline,
                "the slow build never ran its script"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        banger_host::process::signal(pid, banger_host::process::Signal::Kill).unwrap();
        (op, build.join().unwrap())
    });
    let (code, _, err) = cli;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("bangerd went away while operation"), "{err}");
    // The next command's daemon cleans up before it answers.
    let vms = t.json(&["vm", "list"]);
    assert_eq!(
        vms.as_array().unwrap().len(),
        1,
        "{vms:#}\n{}",
        std::fs::read_to_string(t.sandbox.root().join("state/banger/bangerd.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = runtime.block_on(client.get_operation(&op.id)).unwrap();
    assert_eq!(after.state, banger_api::OperationState::Failed, "{after:?}");
    assert!(
        after
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("stage \"run scripts\""),
        "{after:?}"
    );
    assert_eq!(entries(&t, "vms"), vm_dirs_before, "the build's VM is gone");
    assert_eq!(entries(&t, "images"), images_before);
    assert!(entries(&t, "staging").is_empty());
    assert!(entries(&t, "operations").is_empty());
    let (code, _, _) = t.banger(&["image", "show", "slow"]);
    assert_ne!(code, 0);

    // The state directory fills up while a build saves its guest's root: the staging
    // directory, where the build copies the build VM's disks, on a 48 MiB filesystem of its
    // own, and a guest that wrote 64 MiB of data. The build fails with `no_space` (exit 12)
    // naming the path, leaves no VM, staging, image or journal, and the daemon serves on.
    let crammed = d.join("crammed.toml");
    write(
        &crammed,
        "name = \"crammed\"\n[[run]]\ncommand = \"head -c 64M /dev/urandom >/var/crammed && sync\"\n",
        0o644,
    );
    let staging = t.sandbox.root().join("state/banger/staging");
    let pid = t.json(&["daemon", "status"])["pid"].as_u64().unwrap() as u32;
    let small = SmallStaging::mount(pid, &staging, "48m");
    let (code, out, err) = t.banger(&["image", "build", "-f", &crammed.display().to_string()]);
    assert_eq!(code, 12, "{out}\n{err}");
    println!(
        "image build on a full disk: {}",
        err.lines().find(|l| l.starts_with("error:")).unwrap_or("")
    );
    assert!(
        err.contains("run scripts: done"),
        "it failed saving the root: {err}"
    );
    assert!(
        err.contains("no space") || err.contains("No space"),
        "{err}"
    );
    assert!(
        err.contains(&staging.display().to_string()),
        "names the path: {err}"
    );
    assert!(small.entries().is_empty(), "{:?}", small.entries());
    drop(small);
    assert_eq!(entries(&t, "vms"), vm_dirs_before, "the build's VM is gone");
    assert_eq!(entries(&t, "images"), images_before);
    assert!(entries(&t, "operations").is_empty());
    let (code, _, _) = t.banger(&["image", "show", "crammed"]);
    assert_ne!(code, 0);
    assert_eq!(t.json(&["vm", "list"]).as_array().unwrap().len(), 1);

    // Promote: what a VM changed becomes an image; a running VM is refused.
    exec("b1", "echo changed-in-b1 >/etc/promoted; rm /etc/motd");
    let (code, _, err) = t.banger(&["image", "promote", "b1", "tools-plus"]);
    assert_ne!(code, 0);
    assert!(err.contains("only a stopped VM"), "{err}");
    assert!(err.contains("banger vm stop b1"), "{err}");
    t.ok(&["vm", "stop", "b1"]);
    let started = Instant::now();
    let out = t.ok(&["image", "promote", "b1", "tools-plus"]);
    println!("image promote: {:.1}s", started.elapsed().as_secs_f64());
    assert!(out.starts_with("Promoted image tools-plus."), "{out}");
    assert_eq!(
        t.json(&["image", "show", "tools-plus"])["source"],
        "promoted"
    );
    t.ok(&["vm", "create", "--name", "b2", "--image", "tools-plus"]);
    assert_eq!(exec("b2", "cat /etc/promoted"), "changed-in-b1\n");
    assert_eq!(
        exec("b2", "test -e /etc/motd && echo there || echo gone"),
        "gone\n"
    );
    assert!(exec("b2", "jq --version").starts_with("jq-"));
    assert_eq!(exec("b2", "hostname"), "b2\n");
    // The promoted VM itself is untouched and starts again.
    t.ok(&["vm", "start", "b1"]);
    assert_eq!(exec("b1", "cat /etc/promoted"), "changed-in-b1\n");
    assert!(entries(&t, "staging").is_empty());

    // Replace: b2's root and /root become the image `tools-plus`, b2's own image. That image,
    // in use, is retired under a name of its own; b2 runs on from it, and `vm show` says its
    // work disk lacks what `tools-plus` seeds now.
    exec(
        "b2",
        "echo second >/etc/promoted; echo from-b2 >/root/marker",
    );
    t.ok(&["vm", "stop", "b2"]);
    let old = t.json(&["image", "show", "tools-plus"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, err) = t.banger(&["image", "promote", "b2", "tools-plus", "--with-work"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--replace"),
        "the refusal names the way: {err}"
    );
    let started = Instant::now();
    let out = t.ok(&[
        "image",
        "promote",
        "b2",
        "tools-plus",
        "--with-work",
        "--replace",
    ]);
    println!(
        "image promote --replace: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let retired = t.json(&["image", "show", &old]);
    let retired_name = retired["name"].as_str().unwrap().to_owned();
    assert!(retired_name.starts_with("tools-plus-"), "{retired}");
    assert!(
        out.contains(&format!(
            "It replaces the former tools-plus, kept as {retired_name} while VMs or snapshots use it."
        )),
        "{out}"
    );
    assert_eq!(retired["retired"]["name"], "tools-plus");
    let new = t.json(&["image", "show", "tools-plus"]);
    assert_eq!(retired["retired"]["replaced_by"]["id"], new["id"]);
    assert!(
        t.ok(&["image", "list"])
            .contains("promoted, replaced by tools-plus")
    );
    let b2 = t.json(&["vm", "show", "b2"]);
    assert_eq!(b2["image"]["name"], retired_name.as_str());
    assert_eq!(b2["work_seed"]["replaced_by"]["name"], "tools-plus");
    assert_eq!(b2["work_seed"]["changed"], true, "{b2}");
    let shown = t.ok(&["vm", "show", "b2"]);
    assert!(shown.contains("image retired:"), "{shown}");
    assert!(
        shown.contains("work seed:") && shown.contains("changed in image tools-plus"),
        "{shown}"
    );
    // A VM of the name now gets the new image, its root and its seed.
    t.ok(&["vm", "create", "--name", "b3", "--image", "tools-plus"]);
    assert_eq!(
        exec("b3", "cat /etc/promoted /root/marker"),
        "second\nfrom-b2\n"
    );
    // Its last user gone, the retired image goes with its files.
    let images_with_retired = entries(&t, "images");
    assert!(images_with_retired.contains(&old));
    t.ok(&["vm", "delete", "b2"]);
    let (code, _, _) = t.banger(&["image", "show", &old]);
    assert_ne!(code, 0, "the retired image is gone");
    assert!(!entries(&t, "images").contains(&old));

    // A replaced image nothing uses is deleted at once.
    t.ok(&["vm", "delete", "b3"]);
    t.ok(&["vm", "stop", "b1"]);
    let replaced = t.json(&["image", "show", "tools-plus"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = t.ok(&["image", "promote", "b1", "tools-plus", "--replace"]);
    assert!(
        out.contains("It replaces the former tools-plus, deleted: nothing used it."),
        "{out}"
    );
    assert!(!entries(&t, "images").contains(&replaced));
    assert_eq!(entries(&t, "images").len(), images_with_retired.len() - 1);
}
