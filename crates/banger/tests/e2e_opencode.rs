//! The built-in `opencode` image, for real: `banger image build --builtin opencode` on the
//! bootstrapped Debian image (QEMU under TCG, in a network namespace the test creates), then a
//! VM of it whose opencode server answers HTTP on port 4096, through the port published on the
//! host's loopback, as soon as `vm create` returns. Prints the build's time cold and cached,
//! the image's size and the VM's create-to-ready time (docs/benchmarks.md has the figures).
//! Then an image built on it with a package that compiles a kernel module (DKMS) for the
//! image's kernel, whose VM loads the module.
//!
//! The host's downloads (Debian packages, opencode's npm release) run first with
//! `--download-only` through a daemon outside the namespace; the build itself needs no
//! network. Needs root, QEMU, debootstrap, apt and curl; prints `SKIP:` and passes without.

mod support;

use std::time::Instant;

use support::netns::E2e;

#[test]
fn the_opencode_image_serves_on_port_4096_when_create_returns() {
    let Some(t) = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
        ("apt-get", "--version"),
        ("curl", "--version"),
    ]) else {
        return;
    };
    let started = Instant::now();
    t.sandbox
        .ok(&["image", "build", "--builtin", "opencode", "--download-only"]);
    println!(
        "opencode downloads (host): {:.1}s",
        started.elapsed().as_secs_f64()
    );
    t.sandbox.ok(&["daemon", "stop"]);

    let started = Instant::now();
    let (code, out, err) = t.banger(&["image", "build", "--builtin", "opencode"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "opencode image build (cold, downloads cached): {:.1}s\n{err}",
        started.elapsed().as_secs_f64()
    );
    let image = t.json(&["image", "show", "opencode"]);
    let rootfs = &image["files"]["rootfs"];
    println!(
        "opencode image: rootfs {} MiB apparent, {} MiB allocated",
        rootfs["bytes"].as_u64().unwrap() >> 20,
        rootfs["allocated_bytes"].as_u64().unwrap() >> 20
    );
    assert_eq!(image["manifest"]["publish"], serde_json::json!([4096]));
    assert!(
        image["manifest"]["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "opencode" && s["port"] == 4096)
    );

    let started = Instant::now();
    let (code, out, err) = t.banger(&[
        "image",
        "build",
        "--builtin",
        "opencode",
        "--name",
        "opencode-2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("hit"), "{err}");
    println!(
        "opencode image build (cached): {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let (code, out, err) = t.banger(&["vm", "create", "--name", "oc", "--image", "opencode"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "opencode VM create → ready (port 4096 answering): {:.1}s\n{err}",
        started.elapsed().as_secs_f64()
    );
    assert!(err.contains("opencode: done"), "{err}");
    // Straight away, through the published port on the host's loopback.
    let vm = t.vm("oc");
    let published = vm["published_ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["guest_port"] == 4096)
        .unwrap_or_else(|| panic!("4096 is not published: {vm}"));
    let host_port = published["host_port"].as_u64().unwrap();
    let curl = |url: &str, timeout: &str| {
        let out = t.netns.run(
            "curl",
            &[
                "-sS",
                "-m",
                timeout,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ],
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let forwarded = format!("http://127.0.0.1:{host_port}/");
    let first = curl(&forwarded, "30");
    if first.0 != "200" {
        // Say what answers and when, to tell a slow server from a broken forward.
        let ip = vm["network"]["ip"].as_str().unwrap_or_default().to_owned();
        println!("direct: {:?}", curl(&format!("http://{ip}:4096/"), "10"));
        println!(
            "in the guest: {:?}",
            t.banger(&[
                "vm",
                "exec",
                "oc",
                "--",
                "curl",
                "-sS",
                "-m",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:4096/"
            ])
        );
        let waited = Instant::now();
        let mut last = first.clone();
        while waited.elapsed().as_secs() < 300 && last.0 != "200" {
            last = curl(&forwarded, "10");
        }
        println!(
            "HTTP 200 after {:.1}s more: {last:?}",
            waited.elapsed().as_secs_f64()
        );
        println!(
            "{}",
            t.ok(&[
                "vm",
                "exec",
                "oc",
                "--",
                "tail",
                "-n",
                "30",
                "/var/log/banger/opencode.log"
            ])
        );
    }
    assert_eq!(first.0, "200", "{}", first.1);
    let version = t.ok(&["vm", "exec", "oc", "--", "opencode", "--version"]);
    assert!(version.trim().starts_with("1."), "{version}");
    let tools = t.ok(&[
        "vm",
        "exec",
        "oc",
        "--",
        "sh",
        "-c",
        "git --version && gcc --version | head -1 && curl --version | head -1",
    ]);
    assert!(
        tools.contains("git version") && tools.contains("gcc"),
        "{tools}"
    );
    t.ok(&["vm", "delete", "oc"]);

    // A package that builds a kernel module with DKMS: the recipe names only the package; the
    // build adds the headers of the image's own kernel, the host fetches them with the module's
    // source, the module is compiled in the build VM (whose kernel is the image's), and a VM of
    // the new image loads it.
    let release = image["manifest"]["kernel_version"]
        .as_str()
        .expect("the image's kernel release")
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("dkms.toml");
    std::fs::write(
        &recipe,
        "name = \"dkms\"\nbase = \"opencode\"\npackages = [\"vpoll-dkms\"]\n",
    )
    .unwrap();
    let recipe = recipe.display().to_string();
    // The host's downloads through a daemon outside the namespace, as above: the one inside
    // stops first (the two share the sandbox's directories).
    t.ok(&["daemon", "stop"]);
    let (_, err) = t
        .sandbox
        .run(&["image", "build", "-f", &recipe, "--download-only"], 0);
    assert!(
        err.contains(&format!("linux-headers-{release} for DKMS included")),
        "{err}"
    );
    t.sandbox.ok(&["daemon", "stop"]);
    let started = Instant::now();
    let (code, out, err) = t.banger(&["image", "build", "-f", &recipe]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!(
        "image build with a DKMS module: {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (code, out, err) = t.banger(&["vm", "create", "--name", "dk", "--image", "dkms"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let loaded = t.ok(&[
        "vm",
        "exec",
        "dk",
        "--",
        "sh",
        "-c",
        "modprobe vpoll && grep -w -o '^vpoll' /proc/modules && \
         find /lib/modules/$(uname -r) -name 'vpoll.ko*' | head -n 1",
    ]);
    assert!(loaded.starts_with("vpoll\n"), "{loaded}");
    assert!(
        loaded.contains(&format!("/lib/modules/{release}/")),
        "{loaded}"
    );
    t.ok(&["vm", "delete", "dk"]);
}
