//! The API contract, fuzzed: schemathesis (property-based testing driven by bangerd's own
//! `/v1/openapi.json`) against a real bangerd in a network namespace the test makes. Every
//! answer must be one the document lists, with its content type and schema, and never a 5xx;
//! afterwards every VM directory, tap and VMM process must belong to a VM the API lists, and
//! deleting those VMs must leave none.
//!
//! Bounded cost: the daemon's image is the smallest bangerd accepts (a kernel that boots
//! nothing: a start fails within the VM's short ready timeout), no disk pool, and the routes
//! that read or write arbitrary host paths or download (image register, bootstrap, build,
//! import, export, promote) or end the daemon (shutdown) are left out, as is the copy into a
//! guest (its body is a tar archive the fuzzer cannot make). Every `{name}` of a VM route is
//! `fz`, a VM the test creates, so that those routes meet a real VM and not only 404s.
//!
//! Needs root (the namespace, taps) and schemathesis (`pip install schemathesis`; found on
//! `PATH` or at `$BANGER_SCHEMATHESIS`); prints `SKIP:` and passes without them.
//! `BANGER_FUZZ_EXAMPLES` sets the examples per operation (default 40); `BANGER_FUZZ_SEED`
//! replays a run (the seed is printed; fixed by default, `random` for a new one).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::Sandbox;
use support::netns::{E2e, Netns};

fn schemathesis() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("BANGER_SCHEMATHESIS") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("schemathesis"))
        .find(|p| p.is_file())
}

/// Relays connections to `127.0.0.1:PORT` in the namespace to bangerd's Unix socket, for a
/// fuzzer that speaks TCP. Returns the port; the relay lives as long as the test process.
fn relay(netns: &Netns, socket: PathBuf) -> u16 {
    let listener = netns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(daemon) = UnixStream::connect(&socket) else {
                continue;
            };
            let (mut c_in, mut d_out) = (client.try_clone().unwrap(), daemon.try_clone().unwrap());
            std::thread::spawn(move || {
                copy_then_close(&mut c_in, &mut d_out, |d| {
                    let _ = d.shutdown(std::net::Shutdown::Write);
                })
            });
            let (mut d_in, mut c_out) = (daemon, client);
            std::thread::spawn(move || {
                copy_then_close(&mut d_in, &mut c_out, |c: &mut TcpStream| {
                    let _ = c.shutdown(std::net::Shutdown::Write);
                })
            });
        }
    });
    port
}

fn copy_then_close<R: Read, W: Write>(from: &mut R, to: &mut W, close: impl FnOnce(&mut W)) {
    let _ = std::io::copy(from, to);
    close(to);
}

/// A GET of the API through the relay, as JSON.
fn get(netns: &Netns, port: u16, path: &str) -> Value {
    let out = netns.run(
        "curl",
        &["-sS", "-m", "30", &format!("http://127.0.0.1:{port}{path}")],
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("GET {path}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_owned())
        .collect()
}

/// The directories under `dir` (VM ids), sorted.
fn dirs(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The pids of VMM processes whose command line mentions `dir` (this sandbox's VMs).
fn vmm_pids(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if (cmdline.contains("qemu-system") || cmdline.contains("firecracker"))
            && cmdline.contains(&needle)
        {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn the_api_answers_what_its_document_says_and_leaves_nothing_it_does_not_show() {
    if !rustix::process::geteuid().is_root() {
        banger_test_support::skip!("root not available (the namespace and taps need it)");
        return;
    }
    let Some(fuzzer) = schemathesis() else {
        banger_test_support::skip!(
            "schemathesis not found (pip install schemathesis, or set BANGER_SCHEMATHESIS)"
        );
        return;
    };
    for (program, arg) in [("curl", "--version"), ("mkfs.ext4", "-V")] {
        if !support::netns::have(program, arg) {
            banger_test_support::skip!("{program} not found");
            return;
        }
    }
    let Some(netns) = Netns::create() else {
        banger_test_support::skip!("cannot create a network namespace");
        return;
    };
    let t = E2e {
        sandbox: Sandbox::new(),
        netns,
        cgroup_mounts: String::new(),
    };
    t.sandbox.config(
        "disk_pool = 0\n\
         [defaults]\nvcpus = 1\nmemory_mib = 128\ndisk = \"256M\"\nwork_disk = \"64M\"\n\
         ready_timeout = \"5s\"\nstop_timeout = \"1s\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (kernel, rootfs) = t.sandbox.boot_files();
    t.ok(&[
        "image",
        "register",
        "--name",
        "debian",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    t.ok(&["vm", "create", "--name", "fz", "--no-start"]);
    let socket = t.sandbox.root().join("run/banger/bangerd.sock");
    let port = relay(&t.netns, socket);

    let config = t.sandbox.root().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.name\" = \"fz\"\n").unwrap();
    // A fixed seed by default, so that CI replays the same cases and a failure is a change in
    // banger, not luck; `random` explores.
    let seed = match std::env::var("BANGER_FUZZ_SEED").as_deref() {
        Ok("random") => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            (now.unwrap().subsec_nanos() % 1_000_000_000).to_string()
        }
        Ok(seed) => seed.to_owned(),
        Err(_) => "20261206".to_owned(),
    };
    let examples = std::env::var("BANGER_FUZZ_EXAMPLES").unwrap_or_else(|_| "40".into());
    println!("fuzzing with seed {seed} ({examples} examples per operation)");
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new("ip")
        .args(["netns", "exec", &t.netns.0])
        .arg(&fuzzer)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{url}/v1/openapi.json"),
            "--url",
            &url,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--exclude-path-regex",
            "^/v1/(images(/bootstrap|/build|/import|/promote|/[^/]+/export)?|daemon/shutdown)$",
            // The one PUT takes a tar archive, which the fuzzer cannot generate.
            "--exclude-method",
            "PUT",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--request-timeout",
            "60",
            "--workers",
            "1",
        ])
        .current_dir(t.sandbox.root())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "schemathesis found answers the document does not allow (seed {seed}; see above)"
    );
    // The excluded registration route stayed excluded: the only image is ours.
    assert_eq!(
        names(&get(&t.netns, port, "/v1/images"), "name"),
        ["debian"]
    );

    // Nothing the API does not show: every VM directory, tap and VMM is a listed VM's.
    let vms = get(&t.netns, port, "/v1/vms");
    let ids: Vec<String> = names(&vms, "id");
    let vm_dir = t.sandbox.root().join("state/banger/vms");
    let unlisted: Vec<String> = dirs(&vm_dir)
        .into_iter()
        .filter(|d| !ids.contains(d))
        .collect();
    assert!(
        unlisted.is_empty(),
        "VM directories no VM owns: {unlisted:?}"
    );
    let taps: Vec<String> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|vm| vm["runtime"]["tap"].as_str().map(str::to_owned))
        .collect();
    let stray: Vec<String> = t
        .taps()
        .into_iter()
        .filter(|tap| !taps.contains(tap))
        .collect();
    assert!(stray.is_empty(), "taps no running VM owns: {stray:?}");
    let pids: Vec<u32> = vms
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|vm| vm["runtime"]["pid"].as_u64().map(|p| p as u32))
        .collect();
    let orphans: Vec<u32> = vmm_pids(&t.sandbox.root().join("state"))
        .into_iter()
        .filter(|pid| !pids.contains(pid))
        .collect();
    assert!(orphans.is_empty(), "VMM processes no VM owns: {orphans:?}");

    // And deleting what is listed leaves nothing.
    for name in names(&vms, "name") {
        t.ok(&["vm", "delete", &name]);
    }
    assert_eq!(dirs(&vm_dir), Vec::<String>::new());
    assert_eq!(t.taps(), Vec::<String>::new());
    assert_eq!(vmm_pids(&t.sandbox.root().join("state")), Vec::<u32>::new());
}
