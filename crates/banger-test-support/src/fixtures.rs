//! Records of banger's API as the tests of several crates build them (the `fixtures`
//! feature): one VM, image and snapshot of plausible values each. A test names only the fields
//! its check depends on and takes the rest from here with struct update syntax
//! (`Vm { state, ..fixtures::vm("dev") }`), so the shape of each record is written once and a
//! field added to it is filled in one place.

use banger_api::validate::GIB;
use banger_api::{
    Image, ImageFile, ImageFiles, ImageManifest, ImageRef, ImageSource, Package, PublishedPort,
    ServiceCheck, Snapshot, SnapshotOrigin, Timestamp, Vm, VmNetwork, VmState, VmmKind,
    WorkSeedStatus,
};

/// Stopped VM `name` (id `vm-NAME`) of image `debian`: 2 vCPUs, 1024 MiB, 8 GiB disks, no NAT,
/// at 172.30.0.2 on 172.30.0.0/24, created and last changed at the epoch.
pub fn vm(name: &str) -> Vm {
    Vm {
        id: format!("vm-{name}"),
        name: name.into(),
        image: ImageRef {
            id: "img-debian".into(),
            name: "debian".into(),
        },
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 8 * GIB,
        work_disk_bytes: 8 * GIB,
        nat: false,
        vmm: VmmKind::Auto,
        state: VmState::Stopped,
        network: VmNetwork {
            ip: "172.30.0.2".into(),
            gateway: "172.30.0.1".into(),
            prefix_len: 24,
            mac: "06:00:ac:1e:00:02".into(),
            vsock_cid: 3,
        },
        runtime: None,
        last_error: None,
        work_seed: None,
        published_ports: Vec::new(),
        pool: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    }
}

/// The manifest of a registered image `name`: no distribution, kernel version, packages,
/// services or init features, made at the epoch from `test`.
pub fn manifest(name: &str) -> ImageManifest {
    ImageManifest {
        publish: Vec::new(),
        name: name.into(),
        distro: None,
        suite: None,
        kernel_version: None,
        packages: Vec::new(),
        services: Vec::new(),
        init_features: Vec::new(),
        created_from: "test".into(),
        created_at: Timestamp(0),
        imported_from: None,
    }
}

/// A file of an image, `bytes` long with `allocated_bytes` of them on disk.
pub fn image_file(path: impl Into<String>, bytes: u64, allocated_bytes: u64) -> ImageFile {
    ImageFile {
        path: path.into(),
        bytes,
        allocated_bytes,
    }
}

/// Image `name` (id `img-NAME`) registered at the epoch from a kernel and a rootfs of one
/// byte each (no initrd), with [`manifest`]'s manifest.
pub fn image(name: &str) -> Image {
    let file = |file: &str| image_file(format!("images/img-{name}/{file}"), 1, 1);
    Image {
        id: format!("img-{name}"),
        name: name.into(),
        source: ImageSource::Registered,
        files: ImageFiles {
            kernel: file("vmlinux"),
            initrd: None,
            rootfs: file("rootfs.ext4"),
        },
        manifest: manifest(name),
        created_at: Timestamp(0),
        retired: None,
    }
}

/// The work seed of a VM whose image was replaced by `debian` (id `4567`), whose seed
/// changed with it.
pub fn replaced_work_seed() -> WorkSeedStatus {
    WorkSeedStatus {
        vm: Some("aa".into()),
        image: "bb".into(),
        changed: true,
        seed_dir: Some("/state/images/4567/work-seed".into()),
        replaced_by: Some(ImageRef {
            id: "4567".into(),
            name: "debian".into(),
        }),
    }
}

/// A package `name` at `version`, as an image's manifest lists it.
pub fn package(name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
    }
}

/// A service an image declares on guest `port`, with the default timeout and a TCP check.
pub fn service(name: &str, port: u16) -> ServiceCheck {
    ServiceCheck {
        name: name.into(),
        port,
        timeout_secs: None,
        http: None,
    }
}

/// Two published ports: host 8080 on loopback to guest 4096, and host 9000 on every address
/// to guest 80 (reachable beyond the host).
pub fn published_ports() -> Vec<PublishedPort> {
    let port = |address: &str, host_port, guest_port| PublishedPort {
        address: address.into(),
        host_port,
        guest_port,
    };
    vec![port("127.0.0.1", 8080, 4096), port("0.0.0.0", 9000, 80)]
}

/// Snapshot `name` (id `id-NAME`) of VM `dev` of `image`: 1 vCPU, 256 MiB, 1 GiB disks and
/// 300 MiB on disk, taken by Firecracker 1.16.1 at 5 ms after the epoch.
pub fn snapshot(name: &str, image: &Image) -> Snapshot {
    Snapshot {
        id: format!("id-{name}"),
        name: name.into(),
        vm: SnapshotOrigin {
            id: "vm1".into(),
            name: "dev".into(),
        },
        image: ImageRef {
            id: image.id.clone(),
            name: image.name.clone(),
        },
        vcpus: 1,
        memory_mib: 256,
        disk_bytes: 1 << 30,
        work_disk_bytes: 1 << 30,
        firecracker_version: "1.16.1".into(),
        cpu: "AMD EPYC".into(),
        size_bytes: 300 << 20,
        created_at: Timestamp::from_millis(5),
    }
}
