//! The store through its public API, against real database files: migrations (twice, from an
//! older schema, from a newer one), decoding of corrupt rows, allocation of names / IPs / MACs
//! / CIDs (also under concurrency from threads and from separate handles), and the integrity
//! rules (duplicates, images in use, unknown images).
//!
//! It stays one file, one test binary: every test uses the same fixtures (`store_with_image`,
//! `new_vm`, the raw SQL helpers) on the store's one public API.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{
    Image, ImageFiles, ImageManifest, ImageRef, ImageSource, PublishedPort, ServiceCheck,
    Timestamp, VmState, VmmKind,
};
use banger_store::{
    Demand, MIGRATIONS, NetworkPool, NewVm, Reserved, SCHEMA_VERSION, Store, StoreError,
    VmResources,
};
use banger_test_support::fixtures::{self, snapshot};

/// A bootstrapped image with a distribution, packages and a service, so a round trip carries
/// them.
fn image(id: &str, name: &str) -> Image {
    let file =
        |file: &str, bytes| fixtures::image_file(format!("images/{id}/{file}"), bytes, bytes / 2);
    Image {
        id: id.into(),
        source: ImageSource::Bootstrapped,
        files: ImageFiles {
            kernel: file("vmlinux", 40 << 20),
            initrd: Some(file("initrd", 8 << 20)),
            rootfs: file("rootfs.ext4", 2 << 30),
        },
        manifest: ImageManifest {
            distro: Some("debian".into()),
            suite: Some("trixie".into()),
            kernel_version: Some("6.12.0-1-cloud-amd64".into()),
            packages: vec![fixtures::package("openssh-server", "1:9.9p1-1")],
            services: vec![fixtures::service("opencode", 4096)],
            created_from: "banger image bootstrap debian".into(),
            created_at: Timestamp(1_763_900_000_123),
            ..fixtures::manifest(name)
        },
        created_at: Timestamp(1_763_900_000_456),
        ..fixtures::image(name)
    }
}

fn new_vm(name: Option<&str>, image_id: &str) -> NewVm {
    NewVm {
        name: name.map(str::to_owned),
        image_id: image_id.into(),
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 8 << 30,
        work_disk_bytes: 4 << 30,
        nat: false,
        vmm: VmmKind::Auto,
        state: VmState::Stopped,
        published_ports: Vec::new(),
        pool: None,
    }
}

fn pool(subnet: &str) -> NetworkPool {
    NetworkPool::new(subnet).unwrap()
}

/// A store with one image, `img1` named `debian`.
fn store_with_image() -> Store {
    let store = Store::open_in_memory().unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    store
}

/// Where a test's database file goes (not made yet), in a directory removed when the first
/// value is dropped.
fn database_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("banger.db");
    (dir, path)
}

/// VM `name` of `img1` at the defaults of [`new_vm`], on 172.30.0.0/24.
fn create(store: &Store, name: &str) -> banger_api::Vm {
    store
        .create_vm(&new_vm(Some(name), "img1"), &pool("172.30.0.0/24"))
        .unwrap()
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A connection to a new database at `path` that only migration 1 made.
fn at_schema_1(path: &Path) -> rusqlite::Connection {
    let conn = raw(path);
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.pragma_update(None, "user_version", 1).unwrap();
    conn
}

fn user_version(path: &Path) -> i64 {
    raw(path)
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap()
}

/// The SQL of everything in the schema of the database at `path`, by name.
fn schema(path: &Path) -> Vec<String> {
    raw(path)
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn index_exists(path: &Path, name: &str) -> bool {
    raw(path)
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
        == 1
}

// ---- migrations -------------------------------------------------------------------------

#[test]
fn opening_twice_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directory is created on open.
    let path = dir.path().join("state/banger/banger.db");
    {
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.insert_image(&image("img1", "debian")).unwrap();
    }
    let schema_before = schema(&path);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION));
    let schema_after = schema(&path);
    assert_eq!(schema_before, schema_after);
    assert_eq!(store.list_images().unwrap(), vec![image("img1", "debian")]);
}

#[test]
fn database_written_by_schema_1_migrates_and_decodes() {
    let (_dir, path) = database_file();
    {
        // What banger with only migration 1 left behind, written row by row as it wrote them.
        let conn = at_schema_1(&path);
        conn.execute(
            "INSERT INTO images (id, name, source, files, manifest, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                "0011223344556677",
                "debian",
                "registered",
                r#"{"kernel":{"path":"images/0011223344556677/vmlinux","bytes":100,"allocated_bytes":64},
                    "rootfs":{"path":"images/0011223344556677/rootfs.ext4","bytes":2000,"allocated_bytes":1000}}"#,
                r#"{"name":"debian","services":[{"name":"ssh","port":22}],"created_from":"/srv/vmlinux, /srv/rootfs.ext4","created_at":"2025-11-23T12:13:20.123Z"}"#,
                1_763_900_000_123_i64,
            ],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO vms VALUES ('a1b2c3d4e5f60718', 'dev', '0011223344556677', 4, 2048,
                                     8589934592, 4294967296, 1, 'firecracker', 'running',
                                     '10.9.0.7', '10.9.0.1', 16, '06:00:0a:09:00:07', 5,
                                     1763900000000, 1763900001000)",
            [],
        )
        .unwrap();
    }
    assert!(!index_exists(&path, "vms_image_id"));

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(index_exists(&path, "vms_image_id"));

    let images = store.list_images().unwrap();
    assert_eq!(images.len(), 1);
    let img = &images[0];
    assert_eq!(img.id, "0011223344556677");
    assert_eq!(img.source, ImageSource::Registered);
    assert_eq!(img.files.kernel.allocated_bytes, 64);
    assert_eq!(img.files.initrd, None);
    assert_eq!(img.manifest.created_at, Timestamp(1_763_900_000_123));
    assert!(img.manifest.packages.is_empty());
    // A service recorded before services had their own deadlines waits the configured one.
    assert_eq!(
        img.manifest.services,
        [ServiceCheck {
            name: "ssh".into(),
            port: 22,
            timeout_secs: None,
            http: None,
        }]
    );

    let vm = store.find_vm("dev").unwrap().expect("the VM survives");
    assert_eq!(vm.id, "a1b2c3d4e5f60718");
    assert_eq!(vm.image.id, "0011223344556677");
    assert_eq!(vm.image.name, "debian");
    assert_eq!((vm.vcpus, vm.memory_mib), (4, 2048));
    assert_eq!((vm.disk_bytes, vm.work_disk_bytes), (8 << 30, 4 << 30));
    assert!(vm.nat);
    assert_eq!(vm.vmm, VmmKind::Firecracker);
    assert_eq!(vm.state, VmState::Running);
    assert_eq!(vm.network.ip, "10.9.0.7");
    assert_eq!(vm.network.gateway, "10.9.0.1");
    assert_eq!(vm.network.prefix_len, 16);
    assert_eq!(vm.network.mac, "06:00:0a:09:00:07");
    assert_eq!(vm.network.vsock_cid, 5);
    assert!(vm.published_ports.is_empty());
    assert_eq!(vm.created_at, Timestamp(1_763_900_000_000));
    assert_eq!(vm.updated_at, Timestamp(1_763_900_001_000));
    assert_eq!(
        store.vms_using_image("0011223344556677").unwrap(),
        vec!["dev"]
    );
}

#[test]
fn database_from_a_newer_banger_is_refused_untouched() {
    let (_dir, path) = database_file();
    raw(&path).pragma_update(None, "user_version", 999).unwrap();

    match Store::open(&path) {
        Err(err @ StoreError::TooNew { found, supported }) => {
            assert_eq!((found, supported), (999, SCHEMA_VERSION));
            assert!(err.to_string().contains("upgrade banger"), "{err}");
            assert!(err.hint().is_some());
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    assert_eq!(user_version(&path), 999);
    let tables: i64 = raw(&path)
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .unwrap();
    assert_eq!(tables, 0, "nothing may be created in a newer database");
}

#[test]
fn a_failing_migration_leaves_the_database_as_it_was() {
    let (_dir, path) = database_file();
    {
        let conn = at_schema_1(&path);
        // Something migration 2 wants to create is already there.
        conn.execute_batch("CREATE TABLE vms_image_id (x)").unwrap();
    }
    match Store::open(&path) {
        Err(StoreError::Migrate { version: 2, .. }) => {}
        other => panic!("expected migration 2 to fail, got {other:?}"),
    }
    assert_eq!(user_version(&path), 1);
}

// ---- decoding ---------------------------------------------------------------------------

fn expect_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>, vm_id: &str, needle: &str) {
    match result {
        Err(err @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt { table, id, detail } = &err else {
                unreachable!()
            };
            assert_eq!(*table, "vms");
            assert_eq!(id, vm_id);
            assert!(detail.contains(needle), "{detail}");
            assert!(err.to_string().contains(vm_id), "{err}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn corrupt_rows_are_reported_by_id_not_panicked_on() {
    let cases = [
        ("state = 'exploded'", "exploded"),
        ("vmm = 'vmware'", "vmware"),
        ("ip = 'not-an-ip'", "not-an-ip"),
        ("gateway = '300.1.1.1'", "300.1.1.1"),
        ("prefix_len = 40", "prefix_len"),
        ("vcpus = -1", "vcpus"),
        ("nat = 7", "nat"),
    ];
    for (set, needle) in cases {
        let (_dir, path) = database_file();
        let store = Store::open(&path).unwrap();
        store.insert_image(&image("img1", "debian")).unwrap();
        let p = pool("172.30.0.0/24");
        let fine = store.create_vm(&new_vm(Some("fine"), "img1"), &p).unwrap();
        let vm = store.create_vm(&new_vm(Some("dev"), "img1"), &p).unwrap();

        raw(&path)
            .execute(&format!("UPDATE vms SET {set} WHERE id = ?1"), [&vm.id])
            .unwrap();
        expect_corrupt(store.list_vms(), &vm.id, needle);
        expect_corrupt(store.find_vm("dev"), &vm.id, needle);
        expect_corrupt(store.find_vm(&vm.id), &vm.id, needle);
        // Other rows still decode.
        assert_eq!(store.find_vm("fine").unwrap().unwrap(), fine);
    }
}

#[test]
fn an_image_with_bad_json_is_corrupt() {
    let (_dir, path) = database_file();
    let store = Store::open(&path).unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    raw(&path)
        .execute("UPDATE images SET manifest = '{oops' WHERE id = 'img1'", [])
        .unwrap();
    for result in [
        store.find_image("debian").map(|_| ()),
        store.list_images().map(|_| ()),
    ] {
        match result {
            Err(StoreError::Corrupt { table, id, detail }) => {
                assert_eq!((table, id.as_str()), ("images", "img1"));
                assert!(detail.contains("manifest"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_vm_whose_image_vanished_is_corrupt() {
    let (_dir, path) = database_file();
    let store = Store::open(&path).unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    let vm = create(&store, "dev");
    // Only possible with foreign keys off, i.e. from outside banger.
    raw(&path)
        .execute_batch("PRAGMA foreign_keys = OFF; DELETE FROM images WHERE id = 'img1';")
        .unwrap();
    expect_corrupt(store.list_vms(), &vm.id, "img1");
}

// ---- allocation -------------------------------------------------------------------------

#[test]
fn a_preferred_id_is_taken_when_free_and_a_fresh_one_otherwise() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    let vm = store
        .create_vm_with_id(&new_vm(Some("a"), "img1"), &p, Some("00000000000000aa"))
        .unwrap();
    assert_eq!(vm.id, "00000000000000aa");
    let other = store
        .create_vm_with_id(&new_vm(Some("b"), "img1"), &p, Some("00000000000000aa"))
        .unwrap();
    assert_ne!(other.id, vm.id);
    assert_eq!(other.id.len(), 16);
}

#[test]
fn ips_start_at_2_and_never_take_network_gateway_or_broadcast() {
    let store = store_with_image();
    let p = pool("10.0.0.8/29");
    let mut ips = Vec::new();
    for i in 0..5 {
        let vm = store.create_vm(&new_vm(None, "img1"), &p).unwrap();
        assert_eq!(vm.network.gateway, "10.0.0.9");
        assert_eq!(vm.network.prefix_len, 29);
        assert_eq!(vm.network.vsock_cid, 3 + i);
        ips.push(vm.network.ip.clone());
    }
    assert_eq!(
        ips,
        [
            "10.0.0.10",
            "10.0.0.11",
            "10.0.0.12",
            "10.0.0.13",
            "10.0.0.14"
        ]
    );

    match store.create_vm(&new_vm(None, "img1"), &p) {
        Err(err @ StoreError::Exhausted { .. }) => {
            assert_eq!(err.to_string(), "no free guest IPs in 10.0.0.8/29 left");
            let hint = err.hint().unwrap();
            assert!(
                hint.contains("subnet") && hint.contains("config.toml"),
                "{hint}"
            );
            assert_eq!(err.code(), banger_api::ErrorCode::Exhausted);
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert_eq!(
        store.list_vms().unwrap().len(),
        5,
        "a failed create stores nothing"
    );
}

#[test]
fn first_guest_of_a_slash_24_is_dot_2() {
    let store = store_with_image();
    let vm = store
        .create_vm(&new_vm(None, "img1"), &pool("172.30.0.0/24"))
        .unwrap();
    assert_eq!(vm.network.ip, "172.30.0.2");
    assert_eq!(vm.network.gateway, "172.30.0.1");
    assert_eq!(vm.network.mac, "06:00:ac:1e:00:02");
    assert_eq!(vm.network.vsock_cid, 3);
    assert_eq!(vm.id.len(), 16);
    assert!(
        vm.id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    banger_api::validate::name("VM", &vm.name).unwrap();
    assert_eq!(store.find_vm(&vm.id).unwrap().unwrap(), vm);
}

#[test]
fn deleted_vms_free_their_name_ip_mac_and_cid_for_reuse() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    let a = store.create_vm(&new_vm(Some("a"), "img1"), &p).unwrap();
    let b = store.create_vm(&new_vm(Some("b"), "img1"), &p).unwrap();
    let c = store.create_vm(&new_vm(Some("c"), "img1"), &p).unwrap();
    assert_eq!(
        [
            a.network.vsock_cid,
            b.network.vsock_cid,
            c.network.vsock_cid
        ],
        [3, 4, 5]
    );

    let deleted = store.delete_vm(&b.id).unwrap();
    assert_eq!(deleted, b);
    assert_eq!(store.find_vm("b").unwrap(), None);

    let b2 = store.create_vm(&new_vm(Some("b"), "img1"), &p).unwrap();
    assert_ne!(b2.id, b.id);
    assert_eq!(
        b2.network, b.network,
        "lowest free IP, MAC and CID are reused"
    );
    let d = store.create_vm(&new_vm(Some("d"), "img1"), &p).unwrap();
    assert_eq!(d.network.ip, "172.30.0.5");
    assert_eq!(d.network.mac, "06:00:ac:1e:00:05");
    assert_eq!(d.network.vsock_cid, 6);

    // Freeing the lowest of several gaps gives the lowest back first.
    store.delete_vm(&c.id).unwrap();
    store.delete_vm(&a.id).unwrap();
    let e = store.create_vm(&new_vm(None, "img1"), &p).unwrap();
    assert_eq!(
        (e.network.ip.as_str(), e.network.vsock_cid),
        ("172.30.0.2", 3)
    );
    let f = store.create_vm(&new_vm(None, "img1"), &p).unwrap();
    assert_eq!(
        (f.network.ip.as_str(), f.network.vsock_cid),
        ("172.30.0.4", 5)
    );
}

#[test]
fn vms_keep_their_address_when_the_subnet_changes() {
    let store = store_with_image();
    let old = create(&store, "old");
    let new = store
        .create_vm(&new_vm(Some("new"), "img1"), &pool("10.20.0.0/16"))
        .unwrap();
    assert_eq!(new.network.ip, "10.20.0.2");
    assert_eq!(new.network.gateway, "10.20.0.1");
    assert_eq!(new.network.prefix_len, 16);
    assert_eq!(new.network.vsock_cid, 4);
    assert_eq!(store.find_vm("old").unwrap().unwrap(), old);
    assert_eq!(old.network.prefix_len, 24);
}

#[test]
fn generated_names_fall_back_to_a_numeric_suffix() {
    // A /16 holds far more VMs than there are adjective-noun pairs (40 x 40).
    let store = store_with_image();
    let p = pool("10.1.0.0/16");
    let mut names = HashSet::new();
    for _ in 0..1700 {
        let vm = store.create_vm(&new_vm(None, "img1"), &p).unwrap();
        banger_api::validate::name("VM", &vm.name).unwrap();
        assert!(names.insert(vm.name));
    }
    assert!(names.iter().any(|name| name.ends_with("-2")));
    let listed = store.list_vms().unwrap();
    assert_eq!(listed.len(), 1700);
    assert!(
        listed.windows(2).all(|w| w[0].name < w[1].name),
        "ordered by name"
    );
}

fn assert_all_distinct(vms: &[banger_api::Vm], expected: usize) {
    assert_eq!(vms.len(), expected);
    let distinct =
        |f: fn(&banger_api::Vm) -> String| vms.iter().map(f).collect::<HashSet<_>>().len();
    assert_eq!(distinct(|vm| vm.id.clone()), expected);
    assert_eq!(distinct(|vm| vm.name.clone()), expected);
    assert_eq!(distinct(|vm| vm.network.ip.clone()), expected);
    assert_eq!(distinct(|vm| vm.network.mac.clone()), expected);
    assert_eq!(distinct(|vm| vm.network.vsock_cid.to_string()), expected);
    // Lowest-free allocation with no deletes leaves no gaps.
    let mut cids: Vec<u32> = vms.iter().map(|vm| vm.network.vsock_cid).collect();
    cids.sort_unstable();
    assert_eq!(cids, (3..3 + expected as u32).collect::<Vec<_>>());
}

#[test]
fn separate_handles_on_one_file_never_allocate_twice() {
    let (_dir, path) = database_file();
    Store::open(&path)
        .unwrap()
        .insert_image(&image("img1", "debian"))
        .unwrap();

    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                let p = pool("172.30.0.0/24");
                (0..25)
                    .map(|_| store.create_vm(&new_vm(None, "img1"), &p).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let created: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_all_distinct(&created, 100);
    let listed = Store::open(&path).unwrap().list_vms().unwrap();
    assert_all_distinct(&listed, 100);
}

/// Admits a VM while the VMs holding resources keep to 4 vCPUs together.
fn four_vcpus(demand: &Demand<'_>, reserved: Reserved) -> Result<(), banger_api::ApiError> {
    if reserved.vcpus + u64::from(demand.vcpus) > 4 {
        return Err(banger_api::ApiError::new(
            banger_api::ErrorCode::OverCapacity,
            format!(
                "{} does not fit next to {} vCPUs",
                demand.vm, reserved.vcpus
            ),
        ));
    }
    Ok(())
}

/// Starts racing from separate handles (separate connections: only SQLite's write lock
/// orders them) never admit more than fits, whether they create VMs that start or start
/// stopped ones.
#[test]
fn admission_is_decided_under_the_write_lock() {
    let (_dir, path) = database_file();
    let store = Store::open(&path).unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    let p = pool("172.30.0.0/24");
    // Six stopped 2-vCPU VMs: room for two of them to start.
    let ids: Vec<String> = (0..6)
        .map(|i| {
            store
                .create_vm(&new_vm(Some(&format!("vm{i}")), "img1"), &p)
                .unwrap()
                .id
        })
        .collect();
    let barrier = Arc::new(std::sync::Barrier::new(ids.len()));
    let threads: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                barrier.wait();
                store.transition_vm_admitted(
                    &id,
                    &[VmState::Stopped],
                    VmState::Starting,
                    "only a stopped VM can start",
                    None,
                    Some(&four_vcpus),
                )
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        let StoreError::Refused(e) = refused else {
            panic!("{refused:?}");
        };
        let api = banger_api::ApiError::from(StoreError::Refused(e.clone()));
        assert_eq!(api.code, banger_api::ErrorCode::OverCapacity);
        assert!(
            api.message.contains("does not fit next to 4 vCPUs"),
            "{}",
            api.message
        );
    }
    assert_eq!(
        store.reserved().unwrap(),
        Reserved {
            vcpus: 4,
            memory_mib: 2048,
            vms: 2
        }
    );

    // Creates that start race the same way: with one started VM stopped again, two of four
    // 1-vCPU creates fit, and the refused ones record nothing.
    let started = store
        .list_vms()
        .unwrap()
        .into_iter()
        .find(|vm| vm.state == VmState::Starting)
        .unwrap();
    store.set_vm_state(&started.id, VmState::Stopped).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let path = path.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let store = Store::open(&path).unwrap();
                let mut new = new_vm(Some(&format!("new{i}")), "img1");
                new.vcpus = 1;
                new.state = VmState::Starting;
                barrier.wait();
                store.create_vm_admitted(&new, &pool("172.30.0.0/24"), None, Some(&four_vcpus))
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(e, StoreError::Refused(_)))
    );
    assert_eq!(store.list_vms().unwrap().len(), 8);
    assert_eq!(store.reserved().unwrap().vcpus, 4);
    // A create that does not start, and a move between holding states, are not checked.
    let mut stopped = new_vm(Some("cold"), "img1");
    stopped.vcpus = 4;
    store
        .create_vm_admitted(&stopped, &p, None, Some(&four_vcpus))
        .unwrap();
    let late = results.into_iter().find_map(Result::ok).unwrap();
    store
        .transition_vm_admitted(
            &late.id,
            &[VmState::Starting],
            VmState::Running,
            "x",
            None,
            Some(&four_vcpus),
        )
        .unwrap();
}

#[test]
fn a_shared_store_never_allocates_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("banger.db")).unwrap());
    store.insert_image(&image("img1", "debian")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let p = pool("172.30.0.0/24");
                for _ in 0..25 {
                    store.create_vm(&new_vm(None, "img1"), &p).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_all_distinct(&store.list_vms().unwrap(), 100);
}

#[test]
fn concurrent_first_opens_of_a_new_file_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Store::open(&path).map(|s| s.schema_version().unwrap()))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), SCHEMA_VERSION);
    }
}

// ---- integrity --------------------------------------------------------------------------

#[test]
fn a_taken_vm_name_is_already_exists() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    store.create_vm(&new_vm(Some("dev"), "img1"), &p).unwrap();
    match store.create_vm(&new_vm(Some("dev"), "img1"), &p) {
        Err(err @ StoreError::AlreadyExists { .. }) => {
            assert_eq!(err.to_string(), "VM \"dev\" already exists");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.list_vms().unwrap().len(), 1);
}

#[test]
fn a_taken_image_name_or_id_is_already_exists() {
    let store = store_with_image();
    match store.insert_image(&image("img2", "debian")) {
        Err(StoreError::AlreadyExists { kind, name }) => {
            assert_eq!((kind, name.as_str()), ("image", "debian"));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match store.insert_image(&image("img1", "other")) {
        Err(StoreError::AlreadyExists { kind, name }) => {
            assert_eq!((kind, name.as_str()), ("image id", "img1"));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
}

#[test]
fn an_image_in_use_cannot_be_deleted() {
    let store = store_with_image();
    store.insert_image(&image("img2", "alpine")).unwrap();
    let p = pool("172.30.0.0/24");
    let web = store.create_vm(&new_vm(Some("web"), "img1"), &p).unwrap();
    let api = store.create_vm(&new_vm(Some("api"), "img1"), &p).unwrap();
    store.create_vm(&new_vm(Some("other"), "img2"), &p).unwrap();

    match store.delete_image("img1") {
        Err(err @ StoreError::ImageInUse { .. }) => {
            let StoreError::ImageInUse { image, vms } = &err else {
                unreachable!()
            };
            assert_eq!(image, "debian");
            assert_eq!(vms, &["api", "web"]);
            assert_eq!(
                err.to_string(),
                "image \"debian\" is used by 2 VMs: api, web"
            );
        }
        other => panic!("expected ImageInUse, got {other:?}"),
    }
    assert!(store.find_image("img1").unwrap().is_some());

    store.delete_vm(&web.id).unwrap();
    store.delete_vm(&api.id).unwrap();
    store.delete_image("img1").unwrap();
    assert_eq!(store.find_image("debian").unwrap(), None);
    assert!(matches!(
        store.delete_image("img1"),
        Err(StoreError::NotFound { kind: "image", .. })
    ));
}

#[test]
fn a_replaced_image_nothing_uses_is_deleted() {
    let store = store_with_image();
    let replaced = store
        .insert_image_replacing(&image("img2", "debian"))
        .unwrap();
    assert_eq!(
        replaced,
        Some(banger_store::Replaced::Deleted(image("img1", "debian")))
    );
    assert_eq!(store.find_image("debian").unwrap().unwrap().id, "img2");
    assert!(store.find_image("img1").unwrap().is_none());
    // A free name is simply taken.
    assert_eq!(
        store
            .insert_image_replacing(&image("img3", "alpine"))
            .unwrap(),
        None
    );
    // A taken id is refused, replacing or not.
    assert!(matches!(
        store.insert_image_replacing(&image("img3", "debian")),
        Err(StoreError::AlreadyExists {
            kind: "image id",
            ..
        })
    ));
    assert_eq!(store.list_images().unwrap().len(), 2);
}

#[test]
fn a_replaced_image_in_use_is_retired_until_nothing_uses_it() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    let web = store.create_vm(&new_vm(Some("web"), "img1"), &p).unwrap();
    let before = Timestamp::now();
    let replaced = store
        .insert_image_replacing(&image("img2", "debian"))
        .unwrap();
    let Some(banger_store::Replaced::Retired { image: old, name }) = replaced else {
        panic!("expected Retired, got {replaced:?}");
    };
    assert_eq!(old.id, "img1");
    // The name keeps the old one and a part of the id: a valid, findable image name.
    assert_eq!(name, "debian-img1");
    banger_api::validate::name("image", &name).unwrap();
    let retired = store.find_image(&name).unwrap().unwrap();
    assert_eq!(retired.id, "img1");
    let r = retired.retired.as_ref().unwrap();
    assert_eq!(r.name, "debian");
    assert_eq!(
        r.replaced_by,
        Some(ImageRef {
            id: "img2".into(),
            name: "debian".into()
        })
    );
    assert!(r.at >= before);
    // The VM still runs on its own image, under the image's new name.
    let vm = store.find_vm("web").unwrap().unwrap();
    assert_eq!(
        (vm.image.id.as_str(), vm.image.name.as_str()),
        ("img1", name.as_str())
    );
    assert!(store.unused_retired_images().unwrap().is_empty());

    // Replaced again, while a snapshot holds the second: every retired image points at the
    // newest, which is never itself retired.
    store
        .insert_snapshot(&snapshot("s", &image("img2", "debian")))
        .unwrap();
    let again = store
        .insert_image_replacing(&image("img3", "debian"))
        .unwrap();
    assert!(
        matches!(again, Some(banger_store::Replaced::Retired { .. })),
        "{again:?}"
    );
    for id in ["img1", "img2"] {
        let old = store.find_image(id).unwrap().unwrap();
        let by = old.retired.unwrap().replaced_by.unwrap();
        assert_eq!(
            (by.id.as_str(), by.name.as_str()),
            ("img3", "debian"),
            "{id}"
        );
    }
    assert!(store.find_image("img3").unwrap().unwrap().retired.is_none());

    // Unused once their last VM or snapshot goes, and only then.
    store.delete_vm(&web.id).unwrap();
    let unused: Vec<String> = store
        .unused_retired_images()
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(unused, ["img1"]);
    store.delete_snapshot("id-s").unwrap();
    assert_eq!(store.unused_retired_images().unwrap().len(), 2);

    // The replacement gone too: the retired ones say so, and stay retired.
    store.delete_image("img3").unwrap();
    let old = store.find_image("img1").unwrap().unwrap();
    let r = old.retired.unwrap();
    assert_eq!((r.name.as_str(), r.replaced_by), ("debian", None));
}

#[test]
fn a_retired_name_that_is_taken_falls_back_to_the_whole_id() {
    let store = Store::open_in_memory().unwrap();
    let long = "a".repeat(63);
    store
        .insert_image(&image("0123456789abcdef", &long))
        .unwrap();
    store
        .insert_image(&image("other", &format!("{}-01234567", "a".repeat(54))))
        .unwrap();
    let p = pool("172.30.0.0/24");
    store
        .create_vm(&new_vm(Some("web"), "0123456789abcdef"), &p)
        .unwrap();
    let Some(banger_store::Replaced::Retired { name, .. }) =
        store.insert_image_replacing(&image("new", &long)).unwrap()
    else {
        panic!("expected Retired");
    };
    assert_eq!(name, format!("{}-0123456789abcdef", "a".repeat(46)));
    banger_api::validate::name("image", &name).unwrap();
}

#[test]
fn an_unknown_image_is_image_not_found() {
    let store = store_with_image();
    match store.create_vm(&new_vm(Some("dev"), "nope"), &pool("172.30.0.0/24")) {
        Err(StoreError::ImageNotFound { image }) => assert_eq!(image, "nope"),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(store.list_vms().unwrap().is_empty());
}

// ---- records ----------------------------------------------------------------------------

#[test]
fn images_round_trip_and_list_by_name() {
    let store = Store::open_in_memory().unwrap();
    store.insert_image(&image("b-id", "zeta")).unwrap();
    store.insert_image(&image("a-id", "alpha")).unwrap();
    let names: Vec<_> = store
        .list_images()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(
        store.find_image("zeta").unwrap(),
        Some(image("b-id", "zeta"))
    );
    assert_eq!(
        store.find_image("a-id").unwrap(),
        Some(image("a-id", "alpha"))
    );
    assert_eq!(store.find_image("nope").unwrap(), None);
}

#[test]
fn find_prefers_an_id_over_a_name() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    let first = store.create_vm(&new_vm(Some("dev"), "img1"), &p).unwrap();
    // A VM named like the first one's id.
    let second = store
        .create_vm(&new_vm(Some(&first.id.clone()), "img1"), &p)
        .unwrap();
    assert_eq!(store.find_vm(&first.id).unwrap().unwrap().id, first.id);
    assert_eq!(store.find_vm(&second.id).unwrap().unwrap().id, second.id);
    assert_eq!(store.find_vm("dev").unwrap().unwrap().id, first.id);
    assert_eq!(store.find_vm("ghost").unwrap(), None);
}

#[test]
fn resources_and_state_change_in_place() {
    let store = store_with_image();
    let vm = create(&store, "dev");
    std::thread::sleep(std::time::Duration::from_millis(5));

    let changed = store
        .update_vm_resources(
            &vm.id,
            &VmResources {
                vcpus: Some(8),
                memory_mib: None,
                work_disk_bytes: Some(16 << 30),
            },
        )
        .unwrap();
    assert_eq!(changed.vcpus, 8);
    assert_eq!(changed.memory_mib, vm.memory_mib);
    assert_eq!(changed.work_disk_bytes, 16 << 30);
    assert_eq!(changed.created_at, vm.created_at);
    assert!(changed.updated_at > vm.updated_at);
    assert_eq!(store.find_vm("dev").unwrap().unwrap(), changed);

    store.set_vm_state(&vm.id, VmState::Running).unwrap();
    assert_eq!(
        store.find_vm("dev").unwrap().unwrap().state,
        VmState::Running
    );

    for result in [
        store
            .update_vm_resources("ghost", &VmResources::default())
            .map(|_| ()),
        store.set_vm_state("ghost", VmState::Failed),
        store.delete_vm("ghost").map(|_| ()),
    ] {
        match result {
            Err(err @ StoreError::NotFound { kind: "VM", .. }) => {
                assert_eq!(err.to_string(), "VM \"ghost\" not found");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}

#[test]
fn sizes_beyond_sqlite_integers_are_refused() {
    let store = store_with_image();
    let mut new = new_vm(Some("huge"), "img1");
    new.disk_bytes = u64::MAX;
    assert!(matches!(
        store.create_vm(&new, &pool("172.30.0.0/24")),
        Err(StoreError::OutOfRange {
            field: "disk_bytes",
            ..
        })
    ));
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn snapshots_round_trip_and_hold_their_image() {
    let store = Store::open_in_memory().unwrap();
    let image = image("01img", "debian");
    store.insert_image(&image).unwrap();
    let a = snapshot("a", &image);
    store.insert_snapshot(&a).unwrap();
    store.insert_snapshot(&snapshot("b", &image)).unwrap();
    assert!(matches!(
        store.insert_snapshot(&a),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.find_snapshot("a").unwrap().unwrap(), a);
    assert_eq!(store.find_snapshot("id-a").unwrap().unwrap(), a);
    assert_eq!(store.list_snapshots().unwrap().len(), 2);
    assert_eq!(store.snapshots_size().unwrap(), 600 << 20);
    assert_eq!(store.snapshots_using_image(&image.id).unwrap(), ["a", "b"]);
    // The image cannot go while a snapshot needs its root.
    let err = store.delete_image(&image.id).unwrap_err();
    assert_eq!(
        err.to_string(),
        "image \"debian\" is the root of 2 snapshots: a, b"
    );
    assert!(err.hint().unwrap().contains("banger snapshot delete"));
    store.delete_snapshot("id-a").unwrap();
    store.delete_snapshot("id-b").unwrap();
    assert!(store.find_snapshot("a").unwrap().is_none());
    assert!(matches!(
        store.delete_snapshot("id-a"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.snapshots_size().unwrap(), 0);
    store.delete_image(&image.id).unwrap();
}

// ---- published ports --------------------------------------------------------------------

fn forward(host_port: u16, guest_port: u16) -> PublishedPort {
    PublishedPort {
        address: "127.0.0.1".into(),
        host_port,
        guest_port,
    }
}

#[test]
fn published_ports_are_stored_with_their_vm_and_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("banger.db")).unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    let mut new = new_vm(Some("dev"), "img1");
    new.published_ports = vec![forward(9090, 90), forward(8080, 4096)];
    let vm = store.create_vm(&new, &pool("172.30.0.0/24")).unwrap();
    assert_eq!(
        vm.published_ports,
        vec![forward(8080, 4096), forward(9090, 90)]
    );
    assert_eq!(
        store.find_vm("dev").unwrap().unwrap().published_ports,
        vm.published_ports
    );
    assert_eq!(
        store.list_vms().unwrap()[0].published_ports,
        vm.published_ports
    );

    let added = store.add_vm_port(&vm.id, &forward(7070, 70)).unwrap();
    assert_eq!(added.published_ports.len(), 3);
    assert_eq!(
        store.remove_vm_port(&vm.id, 9090).unwrap(),
        Some(forward(9090, 90))
    );
    assert_eq!(store.remove_vm_port(&vm.id, 9090).unwrap(), None);
    assert_eq!(
        store.vm_published_ports(&vm.id).unwrap(),
        vec![forward(7070, 70), forward(8080, 4096)]
    );

    store.delete_vm(&vm.id).unwrap();
    assert_eq!(store.port_owner(8080).unwrap(), None);
    let count: i64 = raw(&dir.path().join("banger.db"))
        .query_row("SELECT COUNT(*) FROM vm_published_ports", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(count, 0);
}

#[test]
fn a_host_port_another_vm_publishes_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("banger.db")).unwrap();
    store.insert_image(&image("img1", "debian")).unwrap();
    let pool = pool("172.30.0.0/24");
    let mut first = new_vm(Some("web"), "img1");
    first.published_ports = vec![forward(8080, 80)];
    store.create_vm(&first, &pool).unwrap();

    // At create: nothing of the second VM is stored.
    let mut second = new_vm(Some("api"), "img1");
    second.published_ports = vec![forward(8081, 81), forward(8080, 80)];
    match store.create_vm(&second, &pool) {
        Err(StoreError::PortTaken { port: 8080, vm }) => assert_eq!(vm, "web"),
        other => panic!("expected PortTaken, got {other:?}"),
    }
    assert!(store.find_vm("api").unwrap().is_none());
    assert_eq!(store.port_owner(8081).unwrap(), None);

    // Added later, on another address: still refused, the port belongs to "web".
    let api = store
        .create_vm(&new_vm(Some("api"), "img1"), &pool)
        .unwrap();
    let mut other_address = forward(8080, 80);
    other_address.address = "0.0.0.0".into();
    let err = store.add_vm_port(&api.id, &other_address).unwrap_err();
    let api_error = banger_api::ApiError::from(err);
    assert_eq!(api_error.code, banger_api::ErrorCode::InUse);
    assert_eq!(
        api_error.message,
        "host port 8080 is already published by VM \"web\""
    );
    assert!(
        api_error
            .hint
            .unwrap()
            .contains("banger vm port rm web 8080")
    );
    assert!(
        store
            .find_vm("api")
            .unwrap()
            .unwrap()
            .published_ports
            .is_empty()
    );
}

/// What the DNS server asks at every question: a name's address and an address's name, and
/// nothing once the VM is deleted. An id is not a name.
#[test]
fn names_and_addresses_for_dns() {
    let store = store_with_image();
    let vm = create(&store, "dev");
    assert_eq!(
        store.vm_ip_by_name("dev").unwrap(),
        Some(vm.network.ip.clone())
    );
    assert_eq!(
        store.vm_name_by_ip(&vm.network.ip).unwrap().as_deref(),
        Some("dev")
    );
    assert_eq!(store.vm_ip_by_name(&vm.id).unwrap(), None);
    assert_eq!(store.vm_ip_by_name("other").unwrap(), None);
    assert_eq!(store.vm_name_by_ip("172.30.0.200").unwrap(), None);
    store.delete_vm(&vm.id).unwrap();
    assert_eq!(store.vm_ip_by_name("dev").unwrap(), None);
    assert_eq!(store.vm_name_by_ip(&vm.network.ip).unwrap(), None);
}

#[test]
fn a_ready_pool_vm_is_taken_once_with_the_spec_asked_and_a_name_not_taken() {
    let store = store_with_image();
    let p = pool("172.30.0.0/24");
    let pooled = |name: &str, state: VmState| NewVm {
        state,
        pool: Some(banger_api::PoolRole::Ready),
        ..new_vm(Some(name), "img1")
    };
    store
        .create_vm(&pooled("pool-a", VmState::Starting), &p)
        .unwrap();
    let ready = store
        .create_vm(&pooled("pool-b", VmState::Paused), &p)
        .unwrap();
    assert_eq!(store.vm_ip_by_name("pool-b").unwrap(), None);
    assert_eq!(store.vm_name_by_ip(&ready.network.ip).unwrap(), None);
    store.create_vm(&new_vm(Some("dev"), "img1"), &p).unwrap();
    let spec = banger_store::PoolSpec {
        vcpus: 2,
        memory_mib: 1024,
        disk_bytes: 8 << 30,
        work_disk_bytes: 4 << 30,
    };
    let other = banger_store::PoolSpec {
        memory_mib: 512,
        ..spec
    };
    assert_eq!(store.take_pooled_vm("img1", &other, None).unwrap(), None);
    match store.take_pooled_vm("img1", &spec, Some("dev")) {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let taken = store
        .take_pooled_vm("img1", &spec, Some("fast"))
        .unwrap()
        .expect("the paused ready VM");
    assert_eq!(taken.id, ready.id);
    assert_eq!(taken.name, "fast");
    assert_eq!(taken.state, VmState::Starting);
    assert_eq!(taken.pool, Some(banger_api::PoolRole::Taken));
    assert_eq!(taken.network, ready.network);
    // DNS: the pool's hidden VMs have no name; a taken one answers under its new name at once.
    assert_eq!(store.vm_ip_by_name("pool-a").unwrap(), None);
    assert_eq!(store.vm_ip_by_name("pool-b").unwrap(), None);
    assert_eq!(
        store.vm_ip_by_name("fast").unwrap(),
        Some(ready.network.ip.clone())
    );
    assert_eq!(
        store.vm_name_by_ip(&ready.network.ip).unwrap().as_deref(),
        Some("fast")
    );
    // Only the one not paused is left to the pool, and it cannot be taken.
    assert_eq!(store.take_pooled_vm("img1", &spec, None).unwrap(), None);
    let hidden: Vec<String> = store
        .pool_vms()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(hidden, ["pool-a"]);
    // Sizes: 0 is kept (it overrides the configuration).
    store.set_pool_size("img", 2).unwrap();
    store.set_pool_size("img", 0).unwrap();
    assert_eq!(store.pool_sizes().unwrap(), [("img".to_owned(), 0)]);
}
