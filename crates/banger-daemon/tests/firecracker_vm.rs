//! The whole VM lifecycle through a real bangerd, the real `firecracker` binary, real taps on a
//! real bridge and real nftables rules, inside a throw-away network namespace: the test thread
//! enters the namespace before it builds the runtime the daemon runs on, so every thread of the
//! daemon, every command it runs and every Firecracker it starts live there.
//!
//! The guest is banger-vmm's tiny test kernel (a stock kernel cannot boot under the paravirtual
//! KVM of banger's build machines): what is asserted is what Firecracker itself reports, and
//! what the host shows. Needs root, iproute2, nftables and Firecracker; prints a visible `SKIP:`
//! line and passes without them.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_api::{Client, OperationState, Vm, VmAction, VmState};
use banger_daemon::HostDeps;
use banger_host::{CommandRunner, CommandSpec, RealRunner};
use banger_vmm::testing;
use banger_vmm::{InstanceState, Vmm};

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    RealRunner
        .run(&CommandSpec::new(program).args(args.iter().copied()))
        .map(|out| out.stdout_lossy())
        .map_err(|e| e.to_string())
}

fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).is_ok()
}

/// The comments of the rules in banger's table (none when it does not exist).
fn nft_comments() -> Vec<String> {
    let Ok(out) = run("nft", &["-j", "list", "table", "inet", "banger"]) else {
        return Vec::new();
    };
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["rule"]["comment"].as_str().map(str::to_owned))
        .collect()
}

fn instance_state(vm: &Vm) -> Result<InstanceState, banger_vmm::VmmError> {
    let binary = banger_vmm::FirecrackerBinary {
        path: "firecracker".into(),
        version: banger_vmm::MIN_VERSION,
    };
    let runtime = vm.runtime.as_ref().expect("a running VM");
    banger_vmm::Firecracker::new(binary).state(&banger_vmm::VmHandle {
        vm_id: vm.id.clone(),
        pid: runtime.pid,
        api_socket: runtime.api_socket.clone().into(),
        vsock_socket: None,
    })
}

/// Waits up to 15 s for `check`, failing the test with `what` when it never holds.
async fn wait_for(what: &str, check: impl AsyncFnMut() -> bool) {
    banger_test_support::wait_for_async(
        what,
        Duration::from_secs(15),
        Duration::from_millis(50),
        check,
    )
    .await;
}

#[test]
fn vm_lifecycle_with_the_real_firecracker_taps_and_nftables() {
    in_a_namespace(lifecycle);
}

/// The same life, jailed: the VM's Firecracker runs as a uid of its own in its chroot, opens the
/// tap given to that uid, and its jail goes with every way the VM stops.
#[test]
fn jailed_vm_lifecycle_with_the_real_jailer() {
    in_a_namespace(jailed_lifecycle);
}

fn in_a_namespace<F: std::future::Future<Output = ()>>(test: impl FnOnce(PathBuf) -> F) {
    let binary = testing::firecracker_or_skip().map(|b| b.path);
    support::in_a_namespace(binary, "banger-test-", test);
}

async fn lifecycle(firecracker: PathBuf) {
    let firecracker = firecracker.as_path();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, client, paths, _vmms) = support::tiny_daemon(
        dir.path(),
        firecracker,
        "jailer = false\n",
        "300ms",
        &testing::tiny_kernel(),
        |p| testing::ext4(p, 16),
    )
    .await;

    // Create starts the VM: Firecracker reports the instance running, the tap is on the bridge.
    support::create_tiny(&client, "dev", true).await;
    let vm = client.get_vm("dev").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    let rt = vm.runtime.clone().unwrap();
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Running);
    // The daemon's spare Firecracker became the VM's VMM, started as that very VM: its socket
    // and its command line name the VM (the guest's console below is in the VM's console log
    // all the same).
    assert_eq!(
        PathBuf::from(&rt.api_socket),
        paths.vm_api_socket(&vm.id),
        "{rt:?}"
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", rt.pid)).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(&format!("--id {}", vm.id)), "{cmdline}");
    assert!(banger_host::pid_alive(rt.pid));
    let link = run("ip", &["-j", "link", "show", "dev", &rt.tap]).unwrap();
    assert!(link.contains("\"master\":\"banger0\""), "{link}");
    let comment = banger_host::network::vm_comment(&vm.id);
    assert!(nft_comments().contains(&comment), "{:?}", nft_comments());
    let console = dir
        .path()
        .join(format!("state/banger/vms/{}/console.log", vm.id));
    wait_for("the guest's console line", async || {
        std::fs::read_to_string(&console).is_ok_and(|c| c.contains(testing::GUEST_HELLO))
    })
    .await;

    // Pause and resume are Firecracker's.
    client.pause_vm("dev", true).await.unwrap();
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Paused);
    client.pause_vm("dev", false).await.unwrap();
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Running);

    // Stop leaves no process, tap, rule or socket.
    let op = client.vm_action("dev", VmAction::Stop).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(!banger_host::pid_alive(rt.pid));
    assert!(!link_exists(&rt.tap));
    assert!(!nft_comments().contains(&comment));
    assert!(!Path::new(&rt.api_socket).exists());
    assert!(!Path::new(rt.vsock_socket.as_deref().unwrap()).exists());

    // kill -9 of Firecracker is noticed: the VM fails and its tap, rules and sockets go.
    let op = client.vm_action("dev", VmAction::Start).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let rt = client.get_vm("dev").await.unwrap().runtime.unwrap();
    banger_host::signal(rt.pid, banger_host::Signal::Kill).unwrap();
    wait_for("the killed VMM to be noticed", async || {
        client.get_vm("dev").await.unwrap().state == VmState::Failed
    })
    .await;
    let vm = client.get_vm("dev").await.unwrap();
    assert!(
        vm.last_error
            .as_deref()
            .unwrap()
            .contains(testing::GUEST_HELLO),
        "the failure carries the console: {:?}",
        vm.last_error
    );
    assert!(!link_exists(&rt.tap));
    assert!(!nft_comments().contains(&comment));
    assert!(!Path::new(&rt.api_socket).exists());

    // A daemon that goes away leaves its VMs running; the next one adopts them.
    let op = client.vm_action("dev", VmAction::Start).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let rt = client.get_vm("dev").await.unwrap().runtime.unwrap();
    daemon.stop().await;
    assert!(banger_host::pid_alive(rt.pid));
    // A spare Firecracker a daemon that died left (a stopped daemon releases its own).
    let spare_dir = paths.state_dir.join("spare");
    assert_eq!(std::fs::read_dir(&spare_dir).unwrap().count(), 0);
    let orphan = banger_vmm::Firecracker::new(
        banger_vmm::FirecrackerBinary::check(firecracker.to_owned(), &RealRunner).unwrap(),
    )
    .spawn_spare("orphan", &paths.vm_sockets_dir(), &spare_dir)
    .unwrap();
    let daemon = banger_daemon::start_with(paths.clone(), HostDeps::real())
        .await
        .unwrap();
    wait_for("the orphan spare to be ended", async || {
        !banger_host::pid_alive(orphan.pid)
    })
    .await;
    assert!(!Path::new(&orphan.api_socket).exists());
    assert!(!orphan.console_log.exists());
    let client = Client::new(daemon.socket());
    let vm = client.get_vm("dev").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.runtime.as_ref().unwrap().pid, rt.pid);
    assert!(link_exists(&rt.tap));
    assert!(nft_comments().contains(&comment), "NAT rules rebuilt");

    // Delete stops it first and leaves nothing.
    client.delete_vm("dev").await.unwrap();
    assert!(!banger_host::pid_alive(rt.pid));
    assert!(!link_exists(&rt.tap));
    assert!(!nft_comments().contains(&comment));
    assert!(!paths.vm_dir(&vm.id).exists());
    // The daemon's new spare is all that is left, and goes with the daemon.
    assert!(daemon.daemon.spare.wait_ready(Duration::from_secs(10)));
    let id = daemon.daemon.spare.claim().unwrap();
    let spare = daemon.daemon.spare.take(&id).unwrap();
    let sockets = || {
        std::fs::read_dir(paths.vm_sockets_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect::<Vec<_>>()
    };
    wait_for("the next spare's socket", async || sockets().len() == 2).await;
    let fc = banger_vmm::Firecracker::new(
        banger_vmm::FirecrackerBinary::check(firecracker.to_owned(), &RealRunner).unwrap(),
    );
    assert!(fc.release_spare(spare).is_empty());
    daemon.stop().await;
    assert!(sockets().is_empty(), "{:?}", sockets());
    assert_eq!(std::fs::read_dir(&spare_dir).unwrap().count(), 0);
}

/// Config, image and daemon for a jailed life; `None` (after a `SKIP:` line) without a jailer.
async fn jailed_lifecycle(firecracker: PathBuf) {
    let binary = banger_vmm::FirecrackerBinary::check(firecracker.clone(), &RealRunner).unwrap();
    if let Err(error) = banger_vmm::JailerBinary::detect(None, &binary, &RealRunner) {
        banger_test_support::skip_absent!("no usable jailer: {error}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (daemon, client, paths, _vmms) = support::tiny_daemon(
        dir.path(),
        &firecracker,
        "jailer = true\njail_uids = \"900950-900959\"\n",
        "300ms",
        &testing::tiny_kernel(),
        |p| testing::ext4(p, 16),
    )
    .await;

    support::create_tiny(&client, "jailed", true).await;
    let vm = client.get_vm("jailed").await.unwrap();
    let rt = vm.runtime.clone().unwrap();
    let jail = rt.jail.clone().expect("the VM is jailed");
    let jail_dir = paths.jail_dir().join("firecracker").join(&vm.id);
    assert_eq!(PathBuf::from(&jail.chroot), jail_dir.join("root"));
    assert_eq!(
        PathBuf::from(&rt.api_socket),
        jail_dir.join("root/api.sock")
    );
    assert_eq!(jail.uid, 900_950);
    let status = std::fs::read_to_string(format!("/proc/{}/status", rt.pid)).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{0}\t{0}\t{0}\t{0}", jail.uid)),
        "{status}"
    );
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Running);
    let link = run("ip", &["-j", "link", "show", "dev", &rt.tap]).unwrap();
    assert!(link.contains("\"master\":\"banger0\""), "{link}");
    let console = paths.vm_dir(&vm.id).join("console.log");
    wait_for("the guest's console line", async || {
        std::fs::read_to_string(&console).is_ok_and(|c| c.contains(testing::GUEST_HELLO))
    })
    .await;
    assert!(
        !daemon.daemon.spare.wait_ready(Duration::from_millis(500)),
        "no spare while VMs are jailed"
    );
    client.pause_vm("jailed", true).await.unwrap();
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Paused);
    client.pause_vm("jailed", false).await.unwrap();
    assert_eq!(instance_state(&vm).unwrap(), InstanceState::Running);

    // A stop takes the jail with it; the VM's files are root's again.
    let op = client.vm_action("jailed", VmAction::Stop).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert!(!banger_host::pid_alive(rt.pid));
    assert!(!jail_dir.exists());
    let overlay = paths.vm_dir(&vm.id).join("overlay.ext4");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&overlay).unwrap().uid(), 0);

    // kill -9: noticed, and the jail released with the rest.
    let op = client.vm_action("jailed", VmAction::Start).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let rt = client.get_vm("jailed").await.unwrap().runtime.unwrap();
    banger_host::signal(rt.pid, banger_host::Signal::Kill).unwrap();
    wait_for("the killed VMM to be noticed", async || {
        client.get_vm("jailed").await.unwrap().state == VmState::Failed
    })
    .await;
    wait_for("its jail to go", async || !jail_dir.exists()).await;
    assert!(!link_exists(&rt.tap));

    // A restarted daemon adopts the jailed VM where it runs.
    let op = client.vm_action("jailed", VmAction::Start).await.unwrap();
    let op = client.watch_operation(&op.id, |_| {}).await.unwrap();
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let rt = client.get_vm("jailed").await.unwrap().runtime.unwrap();
    daemon.stop().await;
    assert!(banger_host::pid_alive(rt.pid));
    let daemon = banger_daemon::start_with(paths.clone(), HostDeps::real())
        .await
        .unwrap();
    let client = Client::new(daemon.socket());
    let vm = client.get_vm("jailed").await.unwrap();
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.runtime.as_ref().unwrap().pid, rt.pid);
    assert!(jail_dir.exists());

    // Delete stops it and leaves nothing.
    client.delete_vm("jailed").await.unwrap();
    assert!(!banger_host::pid_alive(rt.pid));
    assert!(!jail_dir.exists());
    assert!(!link_exists(&rt.tap));
    daemon.stop().await;
    let left: Vec<_> = std::fs::read_dir(paths.jail_dir().join("firecracker"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
