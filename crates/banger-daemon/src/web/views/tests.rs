//! Snapshots of pages rendered from fixed data: a change in what users see is a reviewed
//! change. (Pages rendered by a live daemon are in `web::tests`.)
//!
//! They stay in one file because every snapshot is rendered from the same fixed data (`vm`,
//! `image`, `capacity`, `chrome`).

use std::net::Ipv4Addr;

use banger_api::{
    ApiError, Capacity, CpuCapacity, DiskCapacity, Image, ImageFiles, ImageManifest, ImageRef,
    ImageSource, MemoryCapacity, Operation, OperationKind, OperationState, Progress, Stage,
    StageState, Timestamp, Vm, VmNetwork, VmRuntime, VmState, VmmKind, validate,
};

use banger_agent_protocol::protocol::{
    BootStage as GuestBootStage, Health, ListeningPort, Transport,
};

use super::*;
use crate::web::forms::{
    BootstrapInput, BuildInput, FieldErrors, ImageInput, PromoteInput, VmInput,
};
use banger_test_support::fixtures;

const T: i64 = 1_763_900_000_000;

fn chrome(nav: &'static str) -> Chrome {
    Chrome {
        csrf: "CSRF".into(),
        nav,
        notice: None,
        banner: None,
    }
}

/// VM number `n` (1 to 254) of image `debian`: its addresses and times follow from `n`, and
/// the even ones have NAT.
fn vm(name: &str, state: VmState, n: u8) -> Vm {
    Vm {
        id: format!("vm{n:014}"),
        image: ImageRef {
            id: "img0000000000001".into(),
            name: "debian".into(),
        },
        nat: n.is_multiple_of(2),
        state,
        network: VmNetwork {
            ip: format!("172.30.0.{}", n + 1),
            gateway: "172.30.0.1".into(),
            prefix_len: 24,
            mac: format!("06:00:ac:1e:00:{:02x}", n + 1),
            vsock_cid: u32::from(n) + 2,
        },
        created_at: Timestamp(T + i64::from(n) * 60_000),
        updated_at: Timestamp(T + i64::from(n) * 120_000),
        ..fixtures::vm(name)
    }
}

fn image(name: &str) -> Image {
    let file = |path: &str, bytes: u64| {
        fixtures::image_file(
            format!("/home/u/.local/state/banger/images/img0000000000001/{path}"),
            bytes,
            bytes / 3,
        )
    };
    Image {
        id: "img0000000000001".into(),
        source: ImageSource::Bootstrapped,
        files: ImageFiles {
            kernel: file("vmlinux", 38 * validate::MIB),
            initrd: Some(file("initrd", 6 * validate::MIB)),
            rootfs: file("rootfs.ext4", 2 * validate::GIB),
        },
        manifest: ImageManifest {
            distro: Some("debian".into()),
            suite: Some("bookworm".into()),
            kernel_version: Some("6.1.0-28-cloud-amd64".into()),
            packages: vec![
                fixtures::package("openssh-server", "1:9.2p1-2+deb12u3"),
                fixtures::package("systemd", "252.33-1~deb12u1"),
            ],
            services: vec![fixtures::service("opencode", 4096)],
            created_from: "debootstrap bookworm (minbase)".into(),
            created_at: Timestamp(T),
            ..fixtures::manifest(name)
        },
        created_at: Timestamp(T),
        ..fixtures::image(name)
    }
}

fn capacity() -> Capacity {
    Capacity {
        cpu: CpuCapacity {
            host_cpus: 8,
            reserved_vcpus: 4,
            vcpu_limit: Some(32),
        },
        memory: MemoryCapacity {
            host_bytes: 32 * validate::GIB,
            available_bytes: 20 * validate::GIB,
            reserved_bytes: 3 * validate::GIB,
            limit_bytes: Some(31 * validate::GIB),
        },
        disk: DiskCapacity {
            path: "/home/u/.local/state/banger".into(),
            fs_total_bytes: 500 * validate::GIB,
            fs_available_bytes: 350 * validate::GIB,
            vm_allocated_bytes: 3 * validate::GIB / 2,
            image_allocated_bytes: 700 * validate::MIB,
            snapshot_allocated_bytes: 300 * validate::MIB,
        },
        vms_total: 3,
        vms_running: 1,
    }
}

fn running_op() -> Operation {
    let stage = |name: &str, state, progress: Option<(u64, u64)>, ends: bool| Stage {
        name: name.into(),
        state,
        started_at: (state != StageState::Pending && state != StageState::Skipped)
            .then_some(Timestamp(T)),
        ended_at: ends.then_some(Timestamp(T + 1_250)),
        message: (state == StageState::Skipped).then(|| "no initrd".to_owned()),
        progress: progress.map(|(done, total)| Progress {
            done,
            total,
            unit: "bytes".into(),
        }),
    };
    Operation {
        id: "op-00000000000000aa".into(),
        kind: OperationKind::RegisterImage,
        target: "base".into(),
        state: OperationState::Running,
        stages: vec![
            stage("copy kernel", StageState::Done, None, true),
            stage("copy initrd", StageState::Skipped, None, false),
            stage(
                "copy rootfs",
                StageState::Running,
                Some((512 * validate::MIB, 2 * validate::GIB)),
                false,
            ),
            stage("write manifest", StageState::Pending, None, false),
            stage("record", StageState::Pending, None, false),
        ],
        error: None,
        result: None,
        cancel_requested: false,
        created_at: Timestamp(T),
        ended_at: None,
        version: 7,
    }
}

fn render(template: &impl Template) -> String {
    template.render().unwrap()
}

#[test]
fn dashboard_with_data() {
    let vms = [
        vm("dev", VmState::Running, 1),
        vm("web-1", VmState::Stopped, 2),
        vm("scratch", VmState::Failed, 3),
    ];
    insta::assert_snapshot!(render(&DashboardPage {
        chrome: chrome("dashboard"),
        capacity: capacity_cards(&capacity()),
        capacity_error: None,
        operations: vec![OpView::from(&running_op())],
        vms: vms.iter().map(VmRow::from).collect(),
        images: vec![ImageRow::from(&image("debian"))],
    }));
}

#[test]
fn dashboard_empty() {
    let mut empty = capacity();
    empty.cpu.reserved_vcpus = 0;
    empty.memory.reserved_bytes = 0;
    empty.vms_total = 0;
    empty.vms_running = 0;
    // Admission control off: reserved against the host.
    empty.cpu.vcpu_limit = None;
    empty.memory.limit_bytes = None;
    insta::assert_snapshot!(render(&DashboardPage {
        chrome: Chrome {
            notice: Some("Deleted VM dev.".into()),
            ..chrome("dashboard")
        },
        capacity: capacity_cards(&empty),
        capacity_error: None,
        operations: vec![],
        vms: vec![],
        images: vec![],
    }));
}

#[test]
fn vm_page_links_published_ports() {
    let mut dev = vm("dev", VmState::Running, 1);
    dev.runtime = Some(runtime());
    dev.published_ports = fixtures::published_ports();
    let html = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
    assert!(html.contains(
        r#"<a href="http://127.0.0.1:8080" target="_blank" rel="noopener noreferrer">http://127.0.0.1:8080</a> &rarr; guest port 4096</dd>"#
    ), "{html}");
    assert!(html.contains("(listens on 0.0.0.0:9000: reachable beyond this host)"));
    let start = html.find("<h2>Network</h2>").unwrap();
    let end = start + html[start..].find("</section>").unwrap();
    insta::assert_snapshot!("vm_page_network_with_published_ports", &html[start..end]);
}

#[test]
fn vm_page() {
    insta::assert_snapshot!(render(&VmPage::new(
        chrome("vms"),
        &vm("dev", VmState::Stopped, 1),
        &[],
        Ok(vec![]),
    )));
}

fn runtime() -> VmRuntime {
    VmRuntime {
        vmm: VmmKind::Firecracker,
        pid: 4242,
        api_socket: "/run/user/1000/banger/vms/vm00000000000001.api".into(),
        vsock_socket: Some("/run/user/1000/banger/vms/vm00000000000001.vsock".into()),
        tap: "bt-vm0000000000".into(),
        started_at: Timestamp(T + 600_000),
        boot: Vec::new(),
        jail: None,
        qemu: None,
    }
}

/// A start of `target` at `at`, finished (`Some(state)`) or at its `vmm` stage.
fn start_op(target: &str, at: i64, end: Option<OperationState>) -> Operation {
    let stage = |name: &str, from: i64, took: Option<i64>, message: Option<&str>| Stage {
        name: name.into(),
        state: if took.is_some() {
            StageState::Done
        } else if end.is_some() {
            StageState::Failed
        } else {
            StageState::Running
        },
        started_at: Some(Timestamp(at + from)),
        ended_at: took.map(|t| Timestamp(at + from + t)),
        message: message.map(str::to_owned),
        progress: None,
    };
    let ok = end == Some(OperationState::Succeeded);
    let mut stages = vec![
        stage(
            "checks",
            0,
            Some(35),
            Some("Firecracker will start the instance, but KVM cannot boot a stock kernel"),
        ),
        stage("network", 35, Some(120), None),
        stage(
            "vmm",
            155,
            ok.then_some(480),
            Some("firecracker pid 4242").filter(|_| ok),
        ),
    ];
    stages.push(Stage {
        name: "started".into(),
        state: if ok {
            StageState::Done
        } else {
            StageState::Pending
        },
        started_at: ok.then_some(Timestamp(at + 635)),
        ended_at: ok.then_some(Timestamp(at + 640)),
        message: None,
        progress: None,
    });
    Operation {
        id: format!("op-{at:016x}"),
        kind: OperationKind::StartVm,
        target: target.into(),
        state: end.unwrap_or(OperationState::Running),
        stages,
        error: (end == Some(OperationState::Failed))
            .then(|| ApiError::internal("cannot start VM dev: the VMM exited during boot")),
        result: None,
        cancel_requested: false,
        created_at: Timestamp(at),
        ended_at: end.map(|_| Timestamp(at + 640)),
        version: 9,
    }
}

#[test]
fn vm_page_running_with_runtime_boot_timings_and_console() {
    let mut dev = vm("dev", VmState::Running, 1);
    dev.runtime = Some(runtime());
    let ops = [
        // Of an older VM that had the same name: not this one's.
        start_op("dev", T, Some(OperationState::Failed)),
        start_op("dev", T + 600_000, Some(OperationState::Succeeded)),
        start_op("web-1", T + 700_000, Some(OperationState::Succeeded)),
    ];
    let console = vec![
        "[    0.000000] Linux version 6.1.0-28-cloud-amd64".to_owned(),
        "\u{1b}[0;32m  OK  \u{1b}[0m Reached target <multi-user.target> & more".to_owned(),
        "dev login: ".to_owned(),
    ];
    insta::assert_snapshot!(render(&VmPage::new(chrome("vms"), &dev, &ops, Ok(console))));
}

/// A jailed VM's page says how its VMM is confined: its ids, chroot and cgroup.
#[test]
fn vm_page_shows_a_jailed_vmms_confinement() {
    let mut dev = vm("dev", VmState::Running, 1);
    let mut rt = runtime();
    rt.jail = Some(Box::new(banger_api::VmJail {
        uid: 10012,
        gid: 10012,
        chroot: "/var/lib/banger/jail/firecracker/vm00000000000001/root".into(),
        cgroup: Some("/sys/fs/cgroup/banger/vm00000000000001".into()),
        memory_max: Some((512 + 64) << 20),
        cpu_max: Some("100000 100000".into()),
    }));
    dev.runtime = Some(rt);
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
    for shown in [
        "<dt>Jailed as</dt><dd>uid 10012, gid 10012</dd>",
        "<code>/var/lib/banger/jail/firecracker/vm00000000000001/root</code>",
        "/sys/fs/cgroup/banger/vm00000000000001 (memory.max 576M, cpu.max 100000 100000)",
    ] {
        assert!(page.contains(shown), "{shown}\n{page}");
    }
    // Without a cgroup, the page says why.
    let mut rt = runtime();
    rt.jail = Some(Box::new(banger_api::VmJail {
        uid: 10012,
        gid: 10012,
        chroot: "/jail".into(),
        cgroup: None,
        memory_max: None,
        cpu_max: None,
    }));
    dev.runtime = Some(rt);
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
    assert!(
        page.contains("lacks the memory and cpu controllers"),
        "{page}"
    );
    // An unjailed VM's page has none of it.
    dev.runtime = Some(runtime());
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
    assert!(!page.contains("Jailed as"));
    assert!(!page.contains("Confined as"));
}

/// A QEMU VM's page says as whom its QEMU runs and whether its sandbox is on.
#[test]
fn vm_page_shows_a_qemus_confinement() {
    let mut dev = vm("dev", VmState::Running, 1);
    let mut rt = runtime();
    rt.vmm = VmmKind::Qemu;
    rt.qemu = Some(Box::new(banger_api::VmQemuConfinement {
        uid: Some(901_000),
        sandbox: true,
        cgroup: None,
        memory_max: None,
        cpu_max: None,
    }));
    dev.runtime = Some(rt);
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(Vec::new())));
    assert!(
        page.contains(
            "<dt>Confined as</dt><dd>uid 901000, gid 901000, seccomp sandbox, no cgroup of \
             its own</dd>"
        ),
        "{page}"
    );
}

#[test]
fn vm_page_failed_with_last_error() {
    let mut scratch = vm("scratch", VmState::Failed, 3);
    scratch.last_error = Some(
        "its VMM (pid 4242) was killed or crashed; last console lines:\n    [    3.101] \
         Kernel panic - not syncing: VFS: Unable to mount root fs"
            .into(),
    );
    let ops = [start_op(
        "scratch",
        T + 200_000,
        Some(OperationState::Succeeded),
    )];
    insta::assert_snapshot!(render(&VmPage::new(
        chrome("vms"),
        &scratch,
        &ops,
        Ok(vec![
            "[    3.101] Kernel panic - not syncing: VFS: Unable to mount root fs".into()
        ]),
    )));
}

#[test]
fn vm_page_starting_shows_its_operation_in_progress() {
    let dev = vm("dev", VmState::Starting, 1);
    let ops = [start_op("dev", T + 600_000, None)];
    let page = VmPage::new(chrome("vms"), &dev, &ops, Ok(vec![]));
    assert!(page.actions.is_empty(), "nothing to do while it starts");
    assert!(
        page.boot.is_none(),
        "the running start is shown as in progress"
    );
    insta::assert_snapshot!(render(&page));
}

fn health() -> Health {
    Health {
        ready: true,
        version: "0.1.0".into(),
        hostname: "dev".into(),
        uptime_ms: 3_723_000,
        boot: vec![
            GuestBootStage {
                name: "init".into(),
                at_ms: 1_480,
            },
            GuestBootStage {
                name: "agent".into(),
                at_ms: 2_950,
            },
        ],
        listeners: vec!["vsock:1024".into(), "tcp:172.30.0.2:1024".into()],
    }
}

fn port(protocol: Transport, address: &str, port: u16, process: Option<&str>) -> ListeningPort {
    ListeningPort {
        protocol,
        address: address.parse().unwrap(),
        port,
        inode: u64::from(port),
        pid: process.map(|_| 400 + u32::from(port % 100)),
        process: process.map(str::to_owned),
    }
}

/// A guest's sockets of every kind: on every address, on the VM's IP, on loopback, on
/// another address, UDP, and a process whose name is markup.
fn ports() -> Vec<ListeningPort> {
    vec![
        port(Transport::Udp, "0.0.0.0", 68, Some("dhclient")),
        port(Transport::Tcp, "127.0.0.1", 5432, Some("postgres")),
        port(
            Transport::Tcp,
            "0.0.0.0",
            8080,
            Some("<script>alert(1)</script>"),
        ),
        port(Transport::Tcp, "::", 22, Some("sshd")),
        port(Transport::Tcp, "172.30.0.2", 3000, Some("node")),
        port(Transport::Tcp, "172.17.0.1", 9000, None),
        port(Transport::Tcp, "::1", 6379, Some("redis-server")),
        // The same socket reported twice is listed once.
        port(Transport::Tcp, "::", 22, Some("sshd")),
    ]
}

fn running_dev() -> Vm {
    let mut dev = vm("dev", VmState::Running, 1);
    dev.runtime = Some(runtime());
    dev
}

#[test]
fn guest_section_with_health_and_ports() {
    let guest = GuestView::new(&running_dev(), Ok(health()), Ok(ports()), "0.1.0");
    let links: Vec<Option<&str>> = guest.ports.iter().map(|p| p.href.as_deref()).collect();
    assert_eq!(
        links,
        [
            Some("http://172.30.0.2:22/"),
            Some("http://172.30.0.2:3000/"),
            None,
            None,
            Some("http://172.30.0.2:8080/"),
            None,
            None,
        ],
        "TCP on every address or the VM's IP links; loopback, other addresses and UDP do not"
    );
    let html = render(&GuestSection { guest });
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62; (pid 480)"),
        "{html}"
    );
    assert!(
        html.contains(
            "<a href=\"http://172.30.0.2:8080/\" target=\"_blank\" rel=\"noopener noreferrer\">"
        ),
        "{html}"
    );
    insta::assert_snapshot!(html);
}

#[test]
fn guest_section_when_the_agent_does_not_answer() {
    let guest = GuestView::new(
        &running_dev(),
        Err("it did not answer within 1.0 s".into()),
        Err("it did not answer within 1.0 s".into()),
        "0.1.0",
    );
    assert_eq!(guest.ports_error, None, "one message for both");
    insta::assert_snapshot!(render(&GuestSection { guest }));
}

#[test]
fn guest_text_is_cleaned_and_a_version_mismatch_is_noted() {
    let mut h = health();
    h.version = "0.0.9".into();
    h.hostname = "dev\u{1b}[31m\u{7}".into();
    h.ready = false;
    let view = HealthView::new(&h, "0.1.0");
    assert_eq!(view.hostname, "dev");
    assert_eq!(view.state, "not ready");
    assert_eq!(view.version_note.as_deref(), Some("bangerd is 0.1.0"));
    let long = "x".repeat(100);
    let row = PortRow::new(&port(Transport::Tcp, "::", 1, Some(&long)), None);
    assert_eq!(row.process, format!("{}… (pid 401)", "x".repeat(32)));
    assert_eq!(row.href, None, "no VM IP, no link");
}

#[test]
fn the_vm_page_shows_its_guest_section_only_when_given() {
    let dev = running_dev();
    let page = VmPage::new(chrome("vms"), &dev, &[], Ok(vec![]));
    assert!(!render(&page).contains("id=\"guest\""));
    let guest = GuestView::new(&dev, Ok(health()), Ok(vec![]), "0.1.0");
    let html = render(&page.with_guest(Some(guest)));
    assert!(
        html.contains("<section class=\"panel guest\" id=\"guest\" data-guest=\"/vms/dev/guest\">")
    );
    assert!(html.contains("Nothing in the guest is listening."));
}

#[test]
fn the_vm_page_links_each_image_service() {
    let mut dev = running_dev();
    dev.published_ports = vec![banger_api::PublishedPort {
        address: "127.0.0.1".into(),
        host_port: 8080,
        guest_port: 4096,
    }];
    let declared = [("ssh", 22), ("opencode", 4096), ("api", 3000)]
        .map(|(name, port)| fixtures::service(name, port));
    let services = banger_api::service::service_addresses(&dev, &declared, Some("vm"));
    let html = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])).with_services(&services));
    let ip = &dev.network.ip;
    assert!(
        html.contains(
            "<dt>Service opencode</dt><dd><a href=\"http://127.0.0.1:8080\" target=\"_blank\" \
         rel=\"noopener noreferrer\">http://127.0.0.1:8080</a>"
        ),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<dt>Service api</dt><dd><a href=\"http://{ip}:3000\" target=\"_blank\" \
         rel=\"noopener noreferrer\">dev.vm:3000 ({ip}:3000)</a>"
        )),
        "{html}"
    );
    assert!(!html.contains("Service ssh"));
}

#[test]
fn reach_and_uptime() {
    let ip: Option<Ipv4Addr> = Some("172.30.0.2".parse().unwrap());
    let reach = |a: &str| Reach::of(a.parse().unwrap(), ip);
    assert_eq!(reach("0.0.0.0"), Reach::Everywhere);
    assert_eq!(reach("::"), Reach::Everywhere);
    assert_eq!(reach("172.30.0.2"), Reach::VmIp);
    assert_eq!(reach("::ffff:172.30.0.2"), Reach::VmIp);
    assert_eq!(reach("127.0.0.53"), Reach::Loopback);
    assert_eq!(reach("::1"), Reach::Loopback);
    assert_eq!(reach("172.30.0.3"), Reach::Other);
    assert_eq!(duration(42_000), "42s");
    assert_eq!(duration(720_000), "12m 0s");
    assert_eq!(duration(3_723_000), "1h 2m");
    assert_eq!(duration(187_200_000), "2d 4h");
}

fn sudo_banner() -> Problem {
    Problem {
        detail: "banger is not running as root and `sudo -n` refuses ip, nft, sysctl (a \
                 password would be needed): taps, the bridge and NAT rules cannot be set up"
            .into(),
        fix: Some(
            "echo \"$USER ALL=(root) NOPASSWD: /usr/sbin/ip\" | sudo tee \
             /etc/sudoers.d/banger && sudo chmod 0440 /etc/sudoers.d/banger"
                .into(),
        ),
    }
}

#[test]
fn the_sudo_banner_is_on_every_page_while_sudo_is_not_ready() {
    let with = |banner: Option<Problem>| Chrome {
        banner,
        ..chrome("images")
    };
    let page = |banner| {
        render(&ImageListPage {
            chrome: with(banner),
            images: vec![],
            bootstrap: BootstrapInput::defaults().form(&FieldErrors::new(), None),
        })
    };
    let off = page(None);
    assert!(!off.contains("sudo-banner"), "{off}");
    insta::assert_snapshot!("images_page_with_sudo_banner", page(Some(sudo_banner())));
    // Error pages too.
    let error = render(&ErrorPage {
        chrome: with(Some(sudo_banner())),
        title: "Not found".into(),
        message: "no VM named \"x\"".into(),
        hint: None,
    });
    assert!(error.contains("id=\"sudo-banner\""));
}

#[test]
fn build_form_as_first_shown() {
    insta::assert_snapshot!(render(
        &BuildInput::defaults().page(chrome("images"), &FieldErrors::new())
    ));
}

#[test]
fn build_form_with_errors() {
    let input = BuildInput {
        recipe: "name = \"tools\"\n[[file]]\nsrc = \"motd\"\ndest = \"/etc/motd\"\n".into(),
        builtin: String::new(),
        name: "Tools".into(),
        base: "nope".into(),
        no_cache: true,
        replace: true,
    };
    let errors = FieldErrors::from([
        (
            "recipe",
            ApiError::invalid(
                "file src \"motd\" is not an absolute path: the web form takes absolute \
                 host paths only",
            )
            .with_hint("write the full path of each file on the daemon's host"),
        ),
        ("name", validate::name("image", "Tools").unwrap_err()),
        ("base", ApiError::invalid("unknown base image \"nope\"")),
    ]);
    insta::assert_snapshot!(render(&input.page(chrome("images"), &errors)));
}

#[test]
fn vm_page_with_a_refused_promotion() {
    let input = PromoteInput {
        name: "snap".into(),
        with_work: true,
        replace: false,
    };
    let errors = FieldErrors::from([(
        "form",
        ApiError::new(
            banger_api::ErrorCode::InvalidState,
            "VM \"dev\" is running; only a stopped VM's root can become an image",
        )
        .with_hint("stop it first: its root is consistent only when the guest has shut down"),
    )]);
    let mut running = vm("dev", VmState::Running, 1);
    running.runtime = Some(runtime());
    let page = render(
        &VmPage::new(chrome("vms"), &running, &[], Ok(vec![])).with_promote(input.form(&errors)),
    );
    let promote = page
        .split("<section class=\"panel\" id=\"promote\">")
        .nth(1)
        .unwrap();
    insta::assert_snapshot!(promote.split("</section>").next().unwrap());
}

#[test]
fn bootstrap_form_with_errors() {
    let input = BootstrapInput {
        name: "Debian!".into(),
        suite: "Bookworm".into(),
    };
    let errors = FieldErrors::from([
        ("name", validate::name("image", "Debian!").unwrap_err()),
        ("suite", validate::suite("Bookworm").unwrap_err()),
        (
            "form",
            ApiError::new(
                banger_api::ErrorCode::Unavailable,
                "debootstrap is not installed: `banger image bootstrap debian` cannot build images",
            )
            .with_hint("sudo apt-get install debootstrap"),
        ),
    ]);
    let sudo = Problem {
        detail: "banger is not running as root and `sudo -n` refuses debootstrap, mkfs.ext4: \
                 `banger image bootstrap` cannot build the root filesystem"
            .into(),
        fix: Some(
            "echo \"$USER ALL=(root) NOPASSWD: /usr/sbin/debootstrap\" | sudo tee \
             /etc/sudoers.d/banger-bootstrap"
                .into(),
        ),
    };
    insta::assert_snapshot!(render(&ImageListPage {
        chrome: chrome("images"),
        images: vec![ImageRow::from(&image("base"))],
        bootstrap: input.form(&errors, Some(sudo)),
    }));
}

#[test]
fn a_running_bootstrap_has_its_progress_and_a_cancel_button() {
    // The image service's stages, at debootstrap, which reports what it has downloaded.
    let mut op = running_op();
    op.kind = OperationKind::BootstrapImage;
    op.target = "debian".into();
    let mut names: Vec<&str> = banger_image::bootstrap::STAGES.to_vec();
    names.push("record");
    op.stages = names
        .iter()
        .enumerate()
        .map(|(i, name)| Stage {
            name: (*name).into(),
            state: match i {
                0 | 1 => StageState::Done,
                2 => StageState::Running,
                _ => StageState::Pending,
            },
            started_at: (i <= 2).then_some(Timestamp(T + i as i64 * 1_000)),
            ended_at: (i < 2).then_some(Timestamp(T + i as i64 * 1_000 + 900)),
            message: (i == 1).then(|| "linux-image-6.1.0-28-cloud-amd64".to_owned()),
            progress: (i == 2).then(|| Progress {
                done: 96 * validate::MIB,
                total: 240 * validate::MIB,
                unit: "bytes".into(),
            }),
        })
        .collect();
    let view = OpView::from(&op);
    assert_eq!(view.cancel_href, "/operations/op-00000000000000aa/cancel");
    let html = render(&OperationPage {
        chrome: chrome("operations"),
        op: view,
    });
    assert!(html.contains("action=\"/operations/op-00000000000000aa/cancel\""));
    insta::assert_snapshot!("operation_bootstrap_running", html);
}

#[test]
fn vm_actions_follow_the_state() {
    let labels = |state| -> Vec<&'static str> {
        vm_actions(&vm("dev", state, 1))
            .iter()
            .map(|a| a.label)
            .collect()
    };
    assert_eq!(
        labels(VmState::Stopped),
        ["Start", "Reset root…", "Delete…"]
    );
    assert_eq!(labels(VmState::Failed), ["Start", "Reset root…", "Delete…"]);
    assert_eq!(
        labels(VmState::Running),
        ["Stop…", "Restart…", "Pause", "Delete…"]
    );
    assert_eq!(
        labels(VmState::Paused),
        ["Resume", "Stop…", "Restart…", "Delete…"]
    );
    assert!(labels(VmState::Starting).is_empty());
    assert!(labels(VmState::Stopping).is_empty());
    // Those without a confirmation page post at once; the others link to theirs.
    for action in vm_actions(&vm("dev", VmState::Paused, 1)) {
        assert_eq!(
            action.post,
            !action.label.ends_with('…'),
            "{}",
            action.label
        );
    }
}

#[test]
fn console_lines_lose_terminal_escapes_and_control_characters() {
    assert_eq!(
        printable("\u{1b}[0;32m  OK  \u{1b}[0m done\r\u{7}\tx"),
        "  OK   done\tx"
    );
    assert_eq!(printable("\u{1b}7saved\u{1b}8"), "saved");
    assert_eq!(printable("plain <b>"), "plain <b>");
}

#[test]
fn vm_stop_and_restart_confirmations() {
    let dev = vm("dev", VmState::Running, 1);
    insta::assert_snapshot!(
        "vm_stop_confirmation",
        render(&VmConfirmPage::stop(
            chrome("vms"),
            &dev,
            std::time::Duration::from_secs(10)
        ))
    );
    let paused = vm("dev", VmState::Paused, 1);
    let page = VmConfirmPage::restart(chrome("vms"), &paused, std::time::Duration::ZERO);
    assert_eq!(page.action, "/vms/dev/restart");
    assert!(page.explanation.contains("paused"), "{}", page.explanation);
    assert!(render(&page).contains("value=\"CSRF\""));
}

#[test]
fn vm_operations_link_to_their_vm() {
    let failed = OpView::from(&start_op("dev", T, Some(OperationState::Failed)));
    assert_eq!(failed.target_href.as_deref(), Some("/vms/dev"));
    assert_eq!(failed.result, None);
    let done = OpView::from(&start_op("dev", T, Some(OperationState::Succeeded)));
    assert_eq!(done.result.unwrap().label, "VM dev");
    insta::assert_snapshot!(
        "operation_start_failed",
        render(&OperationPage {
            chrome: chrome("operations"),
            op: failed,
        })
    );
}

#[test]
fn vm_delete_confirmation() {
    let row = VmRow::from(&vm("dev", VmState::Stopped, 1));
    insta::assert_snapshot!(render(&VmDeletePage {
        chrome: chrome("vms"),
        action: format!("{}/delete", row.href),
        vm: row,
    }));
}

#[test]
fn create_form_with_inline_errors() {
    let input = VmInput {
        name: "Dev_1".into(),
        image: "debian".into(),
        vcpus: "0".into(),
        memory_mib: "lots".into(),
        disk: "8G".into(),
        work_disk: "1M".into(),
        nat: true,
        vmm: "qemu".into(),
        start: false,
    };
    let errors = FieldErrors::from([
        ("name", validate::name("VM", "Dev_1").unwrap_err()),
        ("vcpus", validate::vcpus(0).unwrap_err()),
        (
            "memory_mib",
            ApiError::invalid("memory must be a whole number (got \"lots\")"),
        ),
        (
            "work_disk",
            validate::disk_bytes("work disk", 1 << 20, validate::MIN_WORK_DISK_BYTES).unwrap_err(),
        ),
    ]);
    let images = [image("debian"), image("base")];
    insta::assert_snapshot!(render(&input.page(chrome("vms"), &images, &errors)));
}

#[test]
fn create_form_without_images() {
    let input = VmInput {
        vcpus: "2".into(),
        memory_mib: "1024".into(),
        disk: "8G".into(),
        work_disk: "8G".into(),
        vmm: "auto".into(),
        start: true,
        ..VmInput::default()
    };
    let errors = FieldErrors::from([(
        "form",
        ApiError::new(
            banger_api::ErrorCode::Exhausted,
            "no free guest IP address is left in 172.30.0.0/24",
        )
        .with_hint("delete VMs you no longer need"),
    )]);
    insta::assert_snapshot!(render(&input.page(chrome("vms"), &[], &errors)));
}

#[test]
fn a_retired_image_and_a_vm_whose_seed_changed_say_so() {
    let mut old = image("debian-3f9a1c2b");
    old.retired = Some(Box::new(banger_api::RetiredImage {
        name: "debian".into(),
        replaced_by: Some(banger_api::ImageRef {
            id: "4567".into(),
            name: "debian".into(),
        }),
        at: Timestamp(T),
    }));
    let page = render(&ImagePage::new(chrome("images"), &old, &["dev".into()]));
    assert!(
        page.contains("<dt>Retired</dt><dd>")
            && page
                .contains(", replaced by debian: was debian, kept while VMs or snapshots use it"),
        "{page}"
    );
    assert!(ImageRow::from(&image("debian")).retired.is_none());

    let mut dev = vm("dev", VmState::Stopped, 1);
    dev.image.name = old.name.clone();
    dev.work_seed = Some(Box::new(fixtures::replaced_work_seed()));
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
    assert!(
        page.contains(
            "Image debian (which replaced debian-3f9a1c2b) seeds other files than it did \
             when this VM&#39;s work disk was made: they are not in its /root; copy what you \
             need from /state/images/4567/work-seed"
        ),
        "{page}"
    );
    dev.work_seed.as_mut().unwrap().changed = false;
    let page = render(&VmPage::new(chrome("vms"), &dev, &[], Ok(vec![])));
    assert!(
        !page.contains("work-seed\""),
        "silent when unchanged: {page}"
    );
}

#[test]
fn image_page() {
    insta::assert_snapshot!(render(&ImagePage::new(
        chrome("images"),
        &image("debian"),
        &["dev".into(), "web-1".into()]
    )));
}

#[test]
fn register_form_with_errors() {
    let input = ImageInput {
        name: "base".into(),
        kernel: "/home/u/bzImage".into(),
        initrd: String::new(),
        rootfs: "rootfs.ext4".into(),
    };
    let errors = FieldErrors::from([
        (
            "kernel",
            ApiError::invalid("/home/u/bzImage is a bzImage, not an ELF vmlinux")
                .with_hint("extract the vmlinux"),
        ),
        (
            "rootfs",
            ApiError::invalid("\"rootfs.ext4\" is not an absolute path"),
        ),
    ]);
    insta::assert_snapshot!(render(&input.page(chrome("images"), &errors)));
}

#[test]
fn operation_page_running_and_failed() {
    let op = running_op();
    insta::assert_snapshot!(
        "operation_running",
        render(&OperationPage {
            chrome: chrome("operations"),
            op: OpView::from(&op),
        })
    );
    let mut failed = op;
    failed.state = OperationState::Failed;
    failed.stages[2].state = StageState::Failed;
    failed.stages[2].ended_at = Some(Timestamp(T + 4_000));
    failed.ended_at = Some(Timestamp(T + 4_000));
    failed.error =
        Some(ApiError::internal("no space left on device").with_hint("free disk space and retry"));
    insta::assert_snapshot!(
        "operation_failed",
        render(&OperationPage {
            chrome: chrome("operations"),
            op: OpView::from(&failed),
        })
    );
}

#[test]
fn operation_progress_counts_stages_and_the_running_share() {
    let view = OpView::from(&running_op());
    // 4 counted stages (one skipped): 1 done + a quarter of the running one.
    assert_eq!(view.percent, 31);
    assert_eq!(view.current, "copy rootfs: 512M of 2G");
    assert_eq!(view.stages[0].detail, "1.2s");
    assert_eq!(view.stages[2].percent, 25);
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["running"], true);
    assert_eq!(json["stages"][1]["state"], "skipped");
}

#[test]
fn hints_keep_what_a_browser_user_can_follow() {
    let hint = "install Firecracker 1.12.0 or newer and put it in PATH, or set \
                firecracker_bin in config.toml; `banger doctor` checks it";
    assert_eq!(
        console_hint(Some(hint)).as_deref(),
        Some(
            "install Firecracker 1.12.0 or newer and put it in PATH, or set firecracker_bin \
             in config.toml"
        )
    );
    assert_eq!(console_hint(Some("run `banger vm list`")), None);
    assert_eq!(
        console_hint(Some("pass --vcpus; or fewer VMs")).as_deref(),
        Some("or fewer VMs")
    );
    assert_eq!(console_hint(None), None);
}

#[test]
fn links_encode_what_they_carry() {
    assert_eq!(vm_href("a b/c"), "/vms/a%20b%2Fc");
    assert_eq!(
        with_query("/p", &[("a", "x&y=z"), ("empty", ""), ("b", "/k")]),
        "/p?a=x%26y%3Dz&b=%2Fk"
    );
    assert_eq!(time(Timestamp(T)), "2025-11-23 12:13:20 UTC");
    assert_eq!(duration(35), "35ms");
    assert_eq!(duration(1_400), "1.4s");
    assert_eq!(duration(12_345), "12s");
    assert_eq!(duration(185_000), "3m 5s");
}
