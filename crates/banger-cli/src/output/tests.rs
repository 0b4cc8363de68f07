//! Snapshots of every renderer, text and JSON, on one set of VMs and images at a fixed "now"
//! ([`NOW`], [`vm`] and [`image`] are shared with the TUI's tests), so a change in what users
//! see is a reviewed change.

use super::*;
use banger_api::validate::GIB;
use banger_api::{ErrorCode, ImageFiles, ImageManifest, ImageRef, ImageSource, VmNetwork, VmState};
use banger_test_support::fixtures::{self, image_file};

/// 2025-11-23T12:13:20Z, the "now" of every snapshot.
pub(crate) const NOW: Timestamp = Timestamp(1_763_900_000_000);

fn ago(secs: i64) -> Timestamp {
    Timestamp(NOW.0 - secs * 1000)
}

pub(crate) fn vm(name: &str, ip: &str, state: VmState) -> Vm {
    let base = fixtures::vm(name);
    Vm {
        id: format!("vm-{name}-0123456789abcdef"),
        image: ImageRef {
            id: "img-0123456789abcdef".into(),
            name: "debian".into(),
        },
        work_disk_bytes: 16 * GIB,
        state,
        network: VmNetwork {
            ip: ip.into(),
            ..base.network
        },
        created_at: ago(180),
        updated_at: ago(42),
        ..base
    }
}

pub(crate) fn image(name: &str, created_at: Timestamp) -> Image {
    let dir = format!("/home/u/.local/state/banger/images/img-{name}");
    Image {
        id: format!("img-{name}-0123456789abcdef"),
        files: ImageFiles {
            kernel: image_file(format!("{dir}/vmlinux"), 40 * MIB, 40 * MIB),
            initrd: Some(image_file(format!("{dir}/initrd"), 12 * MIB, 12 * MIB)),
            rootfs: image_file(format!("{dir}/rootfs.ext4"), 2 * GIB, 700 * MIB),
        },
        manifest: ImageManifest {
            kernel_version: Some("6.1.0-40-cloud-amd64".into()),
            created_from: "/srv/boot/vmlinux, /srv/boot/initrd, /srv/boot/rootfs.ext4".into(),
            created_at,
            ..fixtures::manifest(name)
        },
        created_at,
        ..fixtures::image(name)
    }
}

fn vms() -> Vec<Vm> {
    let mut web = vm("web-1", "172.30.0.3", VmState::Running);
    web.nat = true;
    web.vcpus = 16;
    web.memory_mib = 16384;
    web.work_disk_bytes = 3 * GIB / 2;
    let long = vm(
        "a-very-long-vm-name-that-uses-most-of-the-sixty-three-chars",
        "172.30.0.254",
        VmState::Failed,
    );
    vec![vm("dev", "172.30.0.2", VmState::Stopped), web, long]
}

fn images() -> Vec<Image> {
    let mut bare = image("bare", ago(3 * 86_400));
    bare.files.initrd = None;
    bare.manifest.kernel_version = None;
    let mut old = image(
        "a-long-image-name-for-the-old-kernel-builds",
        ago(90 * 86_400),
    );
    old.source = ImageSource::Bootstrapped;
    let mut debian = image("debian", ago(3 * 60));
    debian.manifest.init_features = vec!["config-drive".into()];
    let mut retired = image("debian-3f9a1c2b", ago(86_400));
    retired.retired = Some(Box::new(banger_api::RetiredImage {
        name: "debian".into(),
        replaced_by: Some(banger_api::ImageRef {
            id: "4567".into(),
            name: "debian".into(),
        }),
        at: ago(3 * 60),
    }));
    vec![debian, bare, old, retired]
}

#[test]
fn columns_and_cuts_count_terminal_columns() {
    let mut table = Table::new([("NAME", Align::Left), ("N", Align::Right)]);
    table.row(["東京".into(), "1".into()]);
    table.row(["tokyo".into(), "22".into()]);
    // `東京` takes four columns: both rows' second column starts at the same place.
    assert_eq!(table.render(), "NAME    N\n東京    1\ntokyo  22\n");
    assert_eq!(fit("東京タワー", 5), "東京…");
    assert_eq!(fit("東京", 4), "東京");
    assert_eq!(fit("tokyo", 3), "to…");
    assert_eq!(fit("tokyo", 0), "…");
}

#[test]
fn vm_list_text() {
    insta::assert_snapshot!(vm_list(&vms()));
}

#[test]
fn vm_list_empty() {
    insta::assert_snapshot!(vm_list(&[]));
}

#[test]
fn vm_list_json() {
    insta::assert_snapshot!(json(&vms()));
}

#[test]
fn vm_list_empty_json() {
    assert_eq!(json(&Vec::<Vm>::new()), "[]\n");
}

#[test]
fn vm_show_text() {
    insta::assert_snapshot!(vm_show(&vms()[1], NOW));
}

#[test]
fn vm_show_says_when_the_image_seed_changed() {
    let mut vm = vms()[1].clone();
    vm.work_seed = Some(Box::new(banger_api::WorkSeedStatus {
        vm: Some("aa".into()),
        image: "bb".into(),
        changed: true,
        seed_dir: Some("/state/images/0123/work-seed".into()),
        replaced_by: None,
    }));
    insta::assert_snapshot!(vm_show(&vm, NOW));
    vm.work_seed.as_mut().unwrap().changed = false;
    assert!(
        !vm_show(&vm, NOW).contains("work seed"),
        "silent when unchanged"
    );
}

#[test]
fn vm_show_says_when_its_image_was_replaced() {
    let mut vm = vms()[1].clone();
    vm.image.name = "debian-3f9a1c2b".into();
    vm.work_seed = Some(Box::new(fixtures::replaced_work_seed()));
    insta::assert_snapshot!(vm_show(&vm, NOW));
    // Replaced, with the same seed: the replacement is told, the seed is not.
    vm.work_seed.as_mut().unwrap().changed = false;
    let text = vm_show(&vm, NOW);
    assert!(text.contains("image retired"), "{text}");
    assert!(!text.contains("work seed"), "{text}");
}

#[test]
fn vm_show_says_as_whom_a_jailed_vmm_runs() {
    let mut vm = vms()[0].clone();
    vm.state = VmState::Running;
    vm.runtime = Some(banger_api::VmRuntime {
        vmm: banger_api::VmmKind::Firecracker,
        pid: 4242,
        api_socket: "/state/jail/firecracker/0123/root/api.sock".into(),
        vsock_socket: Some("/state/jail/firecracker/0123/root/v.sock".into()),
        tap: "bt-0123".into(),
        started_at: NOW,
        boot: Vec::new(),
        jail: None,
        qemu: None,
    });
    // Unjailed, it says so.
    assert!(
        vm_show(&vm, NOW).contains("none: Firecracker runs as bangerd's user"),
        "{}",
        vm_show(&vm, NOW)
    );
    vm.runtime.as_mut().unwrap().jail = Some(Box::new(banger_api::VmJail {
        uid: 900_000,
        gid: 900_000,
        chroot: "/state/jail/firecracker/0123/root".into(),
        cgroup: Some("/sys/fs/cgroup/banger/0123".into()),
        memory_max: Some((1024 + 64) * 1024 * 1024),
        cpu_max: Some("200000 100000".into()),
    }));
    insta::assert_snapshot!(vm_show(&vm, NOW));
    let jail = vm.runtime.as_mut().unwrap().jail.as_mut().unwrap();
    jail.cgroup = None;
    jail.memory_max = None;
    jail.cpu_max = None;
    assert!(
        vm_show(&vm, NOW).contains("none (no cgroup with memory and cpu here"),
        "{}",
        vm_show(&vm, NOW)
    );
}

#[test]
fn vm_show_says_how_a_qemu_is_confined() {
    let mut vm = vms()[0].clone();
    vm.state = VmState::Running;
    vm.runtime = Some(banger_api::VmRuntime {
        vmm: banger_api::VmmKind::Qemu,
        pid: 4242,
        api_socket: "/state/vms/0123/qmp.sock".into(),
        vsock_socket: None,
        tap: "bt-0123".into(),
        started_at: NOW,
        boot: Vec::new(),
        jail: None,
        qemu: Some(Box::new(banger_api::VmQemuConfinement {
            uid: Some(901_000),
            sandbox: true,
            cgroup: Some("/sys/fs/cgroup/memory/banger/0123".into()),
            memory_max: Some((1024 + 256) << 20),
            cpu_max: Some("200000 100000".into()),
        })),
    });
    let shown = vm_show(&vm, NOW);
    assert!(
        shown.lines().any(|l| l.starts_with("confined")
            && l.ends_with(
                "uid 901000, gid 901000, seccomp sandbox, cgroup \
                     /sys/fs/cgroup/memory/banger/0123 (memory.max 1280 MiB, cpu.max 200000 \
                     100000)"
            )),
        "{shown}"
    );
    vm.runtime.as_mut().unwrap().qemu = Some(Box::new(banger_api::VmQemuConfinement {
        uid: None,
        sandbox: false,
        cgroup: None,
        memory_max: None,
        cpu_max: None,
    }));
    let shown = vm_show(&vm, NOW);
    assert!(
        shown.contains(
            "bangerd's user, no seccomp sandbox (qemu_sandbox = false), no cgroup of its own"
        ),
        "{shown}"
    );
}

#[test]
fn vm_show_json() {
    insta::assert_snapshot!(json(&vms()[0]));
}

fn with_ports(mut vm: Vm) -> Vm {
    vm.published_ports = fixtures::published_ports();
    vm
}

#[test]
fn vm_show_lists_published_ports() {
    let vm = with_ports(vms()[1].clone());
    insta::assert_snapshot!(vm_show(&vm, NOW));
    insta::assert_snapshot!("vm_show_json_published_ports", json(&vm));
}

#[test]
fn vm_show_lists_image_services_with_their_addresses() {
    let vm = with_ports(vms()[1].clone());
    let declared = [
        ("agent", 1024),
        ("ssh", 22),
        ("opencode", 4096),
        ("api", 3000),
    ]
    .map(|(name, port)| fixtures::service(name, port));
    // opencode's port is published, api's is reached by name and address; the agent and
    // sshd are not listed.
    let services = banger_api::service::service_addresses(&vm, &declared, Some("vm"));
    insta::assert_snapshot!(vm_show_with_services(&vm, &services, NOW));
    let without_dns = banger_api::service::service_addresses(&vm, &declared, None);
    assert_eq!(
        without_dns.iter().map(|s| s.text()).collect::<Vec<_>>(),
        ["http://127.0.0.1:8080", "172.30.0.3:3000"]
    );
}

#[test]
fn published_port_lists() {
    let running = with_ports(vms()[1].clone());
    insta::assert_snapshot!("published_ports_running", published_ports(&running));
    let stopped = with_ports(vms()[0].clone());
    assert!(
        published_ports(&stopped).ends_with("forwarded from its next start.\n"),
        "{}",
        published_ports(&stopped)
    );
    insta::assert_snapshot!("published_ports_none", published_ports(&vms()[0]));
}

#[test]
fn image_list_text() {
    insta::assert_snapshot!(image_list(&images(), NOW));
}

#[test]
fn image_list_empty() {
    insta::assert_snapshot!(image_list(&[], NOW));
}

#[test]
fn image_list_json() {
    insta::assert_snapshot!(json(&images()));
}

#[test]
fn image_show_text() {
    insta::assert_snapshot!(image_show(&images()[0], NOW));
}

#[test]
fn image_show_text_retired() {
    insta::assert_snapshot!(image_show(&images()[3], NOW));
    let mut orphan = images()[3].clone();
    orphan.retired.as_mut().unwrap().replaced_by = None;
    assert!(image_show(&orphan, NOW).contains("the image that replaced it is gone too"));
}

#[test]
fn image_show_text_bootstrapped() {
    let mut image = images()[1].clone();
    image.source = ImageSource::Bootstrapped;
    image.manifest.distro = Some("debian".into());
    image.manifest.suite = Some("bookworm".into());
    image.manifest.packages = vec![
        fixtures::package("openssh-server", "1:9.2p1-2"),
        fixtures::package("systemd", "252.39-1"),
    ];
    image.manifest.services = vec![
        fixtures::service("ssh", 22),
        fixtures::service("opencode", 4096),
    ];
    insta::assert_snapshot!(image_show(&image, NOW));
}

#[test]
fn image_show_text_imported() {
    let mut image = images()[0].clone();
    image.source = ImageSource::Imported;
    image.manifest.imported_from = Some(
        "/home/me/debian.banger-image (image \"debian\" exported by banger 0.1.0 at \
             2025-11-23T12:13:20.123Z)"
            .into(),
    );
    insta::assert_snapshot!(image_show(&image, NOW));
}

#[test]
fn exported_text_and_json() {
    let result = ExportedImage {
        name: "debian".into(),
        id: "3f2a9c0d11e4b5a6".into(),
        path: "/home/me/debian.banger-image".into(),
        bytes: 187 * MIB + 300 * 1024,
    };
    insta::assert_snapshot!(exported(&result), @r"
        Exported image debian to /home/me/debian.banger-image (187.3M).
        On another host, after copying the file there: banger image import debian.banger-image
        ");
    insta::assert_snapshot!(json(&result), @r#"
        {
          "name": "debian",
          "id": "3f2a9c0d11e4b5a6",
          "path": "/home/me/debian.banger-image",
          "bytes": 196390912
        }
        "#);
}

#[test]
fn image_show_json() {
    insta::assert_snapshot!(json(&images()[0]));
}

fn info() -> DaemonInfo {
    DaemonInfo {
        version: "0.1.0".into(),
        build_id: "0.1.0-1f2e3d-6923a1b0.000000000-4c2a1".into(),
        pid: 4242,
        socket: "/run/user/1000/banger/bangerd.sock".into(),
        state_dir: "/home/u/.local/state/banger".into(),
        log_file: "/home/u/.local/state/banger/bangerd.log".into(),
        started_at: ago(3_725),
        uptime_secs: 3_725,
        web: Default::default(),
        dns_domain: None,
    }
}

#[test]
fn daemon_status_text() {
    insta::assert_snapshot!(daemon_status(&info(), None));
}

#[test]
fn daemon_status_text_outdated() {
    insta::assert_snapshot!(daemon_status(&info(), Some("/usr/local/bin/bangerd")));
}

#[test]
fn daemon_status_text_with_web_console() {
    let mut serving = info();
    serving.web.url = Some("http://127.0.0.1:7878/".into());
    let text = daemon_status(&serving, None);
    assert!(text.contains("web console: http://127.0.0.1:7878/ (sign in with: banger web)"));
    let mut busy = info();
    busy.web.error = Some("cannot listen on 127.0.0.1:7878: address in use".into());
    let text = daemon_status(&busy, None);
    assert!(text.contains("web console: not serving: cannot listen on 127.0.0.1:7878"));
}

#[test]
fn web_login_text() {
    let now = Timestamp(1_000_000);
    let login = banger_api::WebLogin {
        url: "http://127.0.0.1:7878/login?token=abc".into(),
        expires_at: Timestamp(1_000_000 + 120_000),
    };
    insta::assert_snapshot!(web_login(&login, now), @r"
        Open this URL in your browser within 2 min; it signs in once and then stops working:

          http://127.0.0.1:7878/login?token=abc
        ");
}

#[test]
fn doctor_text() {
    use banger_api::DoctorCheck;
    let check = |name: &str, status, detail: &str, fix: Option<&str>| DoctorCheck {
        name: name.into(),
        status,
        detail: detail.into(),
        fix: fix.map(Into::into),
    };
    let report = DoctorReport {
        checks: vec![
            check(
                "kvm",
                DoctorCheckStatus::Warn,
                "kvm_pvm (paravirtual KVM)",
                Some("use QEMU"),
            ),
            check("tun", DoctorCheckStatus::Ok, "/dev/net/tun is usable", None),
            check(
                "nftables",
                DoctorCheckStatus::Fail,
                "nft not found",
                Some("apt-get install nftables"),
            ),
        ],
    };
    insta::assert_snapshot!(doctor(&report), @r"
        warn  kvm       kvm_pvm (paravirtual KVM)
                        fix: use QEMU
        ok    tun       /dev/net/tun is usable
        FAIL  nftables  nft not found
                        fix: apt-get install nftables

        1 check(s) failed; apply the fixes above.
        ");
    let healthy = DoctorReport {
        checks: vec![check("tun", DoctorCheckStatus::Ok, "usable", None)],
    };
    assert!(doctor(&healthy).ends_with("Everything banger needs is in place.\n"));
}

#[test]
fn daemon_status_json() {
    insta::assert_snapshot!(json(&info()));
}

#[test]
fn deletions() {
    insta::assert_snapshot!(deleted("VM", "dev", OutputFormat::Text), @"Deleted VM dev.");
    insta::assert_snapshot!(deleted("image", "debian", OutputFormat::Json), @r#"
        {
          "deleted": "debian"
        }
        "#);
}

#[test]
fn errors_text_and_json() {
    let with_hint = ApiError::new(ErrorCode::InUse, "image \"debian\" is used by 2 VMs")
        .with_hint("delete the VMs dev and web-1 first");
    let plain = ApiError::not_found("no VM named \"dev\"");
    insta::assert_snapshot!(
        "error_with_hint_text",
        error(&with_hint, OutputFormat::Text)
    );
    insta::assert_snapshot!("error_plain_text", error(&plain, OutputFormat::Text));
    insta::assert_snapshot!(
        "error_with_hint_json",
        error(&with_hint, OutputFormat::Json)
    );
    insta::assert_snapshot!("error_plain_json", error(&plain, OutputFormat::Json));
}

#[test]
fn ages_and_durations() {
    let cases = [
        0,
        4,
        5,
        59,
        60,
        3_599,
        3_600,
        47 * 3_600,
        2 * 86_400,
        59 * 86_400,
    ];
    let ages: Vec<String> = cases.iter().map(|s| age(ago(*s), NOW)).collect();
    assert_eq!(
        ages,
        [
            "just now", "just now", "5s ago", "59s ago", "1m ago", "59m ago", "1h ago", "47h ago",
            "2d ago", "59d ago"
        ]
    );
    assert_eq!(age(ago(60 * 86_400), NOW), "2025-09-24");
    // A clock that went backwards is not "in the future".
    assert_eq!(age(Timestamp(NOW.0 + 5_000), NOW), "just now");
}
