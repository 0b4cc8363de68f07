//! Daemon tests: a real bangerd (in-process) on a temporary socket with temporary XDG
//! directories, driven through the real API client and, for malformed requests, raw HTTP.
//!
//! It stays one file, one test binary: every test drives the same [`Harness`], and each further
//! file would link the whole daemon again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use banger_api::paths::Paths;
use banger_api::{
    Client, CreateVmRequest, ErrorCode, ExportImageRequest, ExportedImage, ImageSource,
    ImportImageRequest, Operation, OperationState, RegisterImageRequest, StageState,
    UpdateVmRequest, VmState, validate,
};
use banger_daemon::RunningDaemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

struct Harness {
    _dir: tempfile::TempDir,
    paths: Paths,
    daemon: Option<RunningDaemon>,
    client: Client,
    files: PathBuf,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        // Keep test daemons off the default console port a real banger may be using.
        let paths = support::home(dir.path(), "[web]\nlisten = \"127.0.0.1:0\"\n");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        Self::with(dir, paths, files).await
    }

    async fn with(dir: tempfile::TempDir, paths: Paths, files: PathBuf) -> Harness {
        let daemon = banger_daemon::start(paths.clone()).await.unwrap();
        let client = Client::new(daemon.socket());
        Harness {
            _dir: dir,
            paths,
            daemon: Some(daemon),
            client,
            files,
        }
    }

    async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }

    fn boot_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        support::boot_files(&self.files)
    }

    async fn register(&self, name: &str) -> banger_api::Image {
        support::register(&self.client, &self.files, name, true).await
    }

    async fn create(&self, name: &str, image: &str) -> banger_api::Vm {
        self.client
            .create_vm(&CreateVmRequest {
                name: Some(name.into()),
                image: Some(image.into()),
                vcpus: Some(1),
                memory_mib: Some(256),
                start: Some(false),
                ..Default::default()
            })
            .await
            .unwrap()
            .vm
    }

    /// Operation `op` as it ended.
    async fn watch(&self, op: &Operation) -> Operation {
        self.client.watch_operation(&op.id, |_| {}).await.unwrap()
    }

    /// Operation `op` as it ended, failing the test unless it succeeded.
    async fn succeeds(&self, op: &Operation) -> Operation {
        let done = self.watch(op).await;
        assert_eq!(done.state, OperationState::Succeeded, "{done:?}");
        done
    }

    /// Sends raw bytes on the socket and returns status and body.
    async fn raw_http(&self, request: &str) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::UnixStream::connect(self.paths.socket())
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

/// A VM as `GET /v1/vms/{name}` answers it, less the work seed status only that route adds.
fn without_seed(mut vm: banger_api::Vm) -> banger_api::Vm {
    assert!(
        vm.work_seed.is_some(),
        "GET /v1/vms/NAME reports the work seed"
    );
    vm.work_seed = None;
    vm
}

fn http(method: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bangerd\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_its_identity_and_openapi_on_a_private_socket() {
    let mut h = Harness::start().await;
    let mode = std::fs::metadata(h.paths.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket must be owner-only");
    let runtime_mode = std::fs::metadata(&h.paths.runtime_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(runtime_mode & 0o077, 0);

    let info = h.client.daemon_info().await.unwrap();
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.socket, h.paths.socket().display().to_string());
    assert!(!info.build_id.is_empty());

    let (status, body) = h
        .client
        .raw(hyper::Method::GET, "/v1/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for path in [
        "/v1/vms",
        "/v1/vms/{name}",
        "/v1/images",
        "/v1/images/{name}/export",
        "/v1/images/import",
        "/v1/operations/{id}/stream",
        "/v1/capacity",
        "/v1/vms/{name}/ports/published",
        "/v1/vms/{name}/ports/published/{host_port}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(
        doc["components"]["schemas"]
            .get("CreateVmRequest")
            .is_some()
    );
    for schema in ["PublishPortRequest", "PublishedPort"] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "openapi lacks {schema}"
        );
    }
    // Admission control's limits and refusal.
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["CpuCapacity"]["properties"]
            .get("vcpu_limit")
            .is_some()
    );
    assert!(
        schemas["MemoryCapacity"]["properties"]
            .get("limit_bytes")
            .is_some()
    );
    assert!(
        schemas["ErrorCode"].to_string().contains("over_capacity"),
        "{}",
        schemas["ErrorCode"]
    );
    // A service's own readiness deadline, optional; where the daemon's DNS serves VM names.
    let service = &doc["components"]["schemas"]["ServiceCheck"];
    assert_eq!(
        service["properties"]["timeout_secs"]["minimum"], 1,
        "{service}"
    );
    assert!(
        !service["required"]
            .as_array()
            .unwrap()
            .contains(&"timeout_secs".into()),
        "{service}"
    );
    assert!(
        doc["components"]["schemas"]["DaemonInfo"]["properties"]
            .get("dns_domain")
            .is_some()
    );
    // Image builds and promotions, and the recipe's schema a user can check a recipe against.
    for route in ["/v1/images/build", "/v1/images/promote"] {
        assert!(doc["paths"].get(route).is_some(), "openapi lacks {route}");
    }
    for schema in [
        "Recipe",
        "RecipeService",
        "BuildImageRequest",
        "PromoteImageRequest",
        "RetiredImage",
    ] {
        assert!(schemas.get(schema).is_some(), "openapi lacks {schema}");
    }
    // Replacing an image by name, and what says an image was replaced.
    for (schema, property) in [
        ("BuildImageRequest", "replace"),
        ("PromoteImageRequest", "replace"),
        ("Image", "retired"),
        ("WorkSeedStatus", "replaced_by"),
    ] {
        assert!(
            schemas[schema]["properties"].get(property).is_some(),
            "openapi lacks {schema}.{property}"
        );
    }
    h.stop().await;
    assert!(
        !h.paths.socket().exists(),
        "socket left behind after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_directories_is_refused() {
    let mut h = Harness::start().await;
    let err = banger_daemon::start(h.paths.clone()).await.unwrap_err();
    assert!(err.to_string().contains("already running"), "{err}");
    // The first one is unaffected.
    h.client.daemon_info().await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_registration_copies_and_records() {
    let mut h = Harness::start().await;
    let (kernel, rootfs, _) = h.boot_files();
    let op = h
        .client
        .register_image(&support::register_request("base", &kernel, None, &rootfs))
        .await
        .unwrap();
    assert_eq!(op.state, OperationState::Running);
    let names: Vec<_> = op.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "copy kernel",
            "copy initrd",
            "copy rootfs",
            "write manifest",
            "record"
        ]
    );
    let mut updates = 0;
    let done = h
        .client
        .watch_operation(&op.id, |_| updates += 1)
        .await
        .unwrap();
    assert!(updates >= 1);
    assert_eq!(done.state, OperationState::Succeeded);
    let states: Vec<_> = done.stages.iter().map(|s| s.state).collect();
    assert_eq!(
        states,
        [
            StageState::Done,
            StageState::Skipped,
            StageState::Done,
            StageState::Done,
            StageState::Done
        ]
    );

    let image = h.client.get_image("base").await.unwrap();
    assert_eq!(image.source, ImageSource::Registered);
    assert_eq!(
        image.manifest.kernel_version.as_deref(),
        Some("6.1.0-banger-test")
    );
    let stored = PathBuf::from(&image.files.rootfs.path);
    assert!(stored.starts_with(h.paths.images_dir()));
    // The store holds its own copy: changing the source does not change the image.
    std::fs::write(&rootfs, b"clobbered").unwrap();
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 16 << 20);
    assert!(h.paths.image_dir(&image.id).join("manifest.json").is_file());
    assert_eq!(h.client.list_images().await.unwrap().len(), 1);

    // The finished operation stays readable, and cancelling it changes nothing.
    let again = h.client.cancel_operation(&op.id).await.unwrap();
    assert_eq!(again.state, OperationState::Succeeded);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_refuses_bad_files_before_starting() {
    let mut h = Harness::start().await;
    let (kernel, rootfs, _) = h.boot_files();
    let k = kernel.display().to_string();
    let r = rootfs.display().to_string();
    let cases = [
        ("Bad_Name", k.clone(), r.clone(), "contains"),
        ("ok", "relative/vmlinux".into(), r.clone(), "not absolute"),
        (
            "ok",
            "/nonexistent/vmlinux".into(),
            r.clone(),
            "/nonexistent/vmlinux",
        ),
        ("ok", r.clone(), r.clone(), "kernel"),
        ("ok", k.clone(), k.clone(), "rootfs"),
    ];
    for (name, kernel, rootfs, needle) in cases {
        let err = h
            .client
            .register_image(&RegisterImageRequest {
                publish: Vec::new(),
                name: name.into(),
                kernel,
                initrd: None,
                rootfs,
            })
            .await
            .unwrap_err();
        let api = err.api().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(api.code, ErrorCode::InvalidInput, "{api:?}");
        assert!(api.message.contains(needle), "{needle}: {}", api.message);
    }
    assert!(h.client.list_operations().await.unwrap().is_empty());
    assert!(h.client.list_images().await.unwrap().is_empty());
    h.register("base").await;
    let err = h
        .client
        .register_image(&RegisterImageRequest {
            publish: Vec::new(),
            name: "base".into(),
            kernel: k,
            initrd: None,
            rootfs: r,
        })
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::AlreadyExists));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_records_round_trip() {
    let mut h = Harness::start().await;
    h.register("base").await;
    let vm = h.create("dev", "base").await;
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!(vm.image.name, "base");
    assert_eq!(vm.network.ip, "172.30.0.2");
    assert_eq!(vm.network.gateway, "172.30.0.1");
    assert_eq!(vm.network.vsock_cid, 3);
    assert_eq!(vm.work_disk_bytes, 8 * validate::GIB, "config default");

    let generated = h
        .client
        .create_vm(&CreateVmRequest {
            image: Some("base".into()),
            start: Some(false),
            vcpus: Some(1),
            memory_mib: Some(256),
            ..Default::default()
        })
        .await
        .map(|c| c.vm)
        .unwrap();
    validate::name("VM", &generated.name).unwrap();
    assert_eq!(generated.network.ip, "172.30.0.3");

    let list = h.client.list_vms().await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(without_seed(h.client.get_vm("dev").await.unwrap()), vm);
    assert_eq!(h.client.get_vm(&vm.id).await.unwrap().name, "dev");

    let changed = h
        .client
        .update_vm(
            "dev",
            &UpdateVmRequest {
                vcpus: Some(2),
                memory_mib: Some(512),
                work_disk_bytes: Some(16 * validate::GIB as i64),
            },
        )
        .await
        .unwrap();
    assert_eq!((changed.vcpus, changed.memory_mib), (2, 512));
    assert_eq!(changed.work_disk_bytes, 16 * validate::GIB);
    let shrink = h
        .client
        .update_vm(
            "dev",
            &UpdateVmRequest {
                work_disk_bytes: Some(validate::GIB as i64),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(shrink.api().unwrap().message.contains("can only grow"));

    // The image is in use: deleting it is refused and names the VMs.
    let err = h.client.delete_image("base").await.unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.code, ErrorCode::InUse);
    assert!(api.message.contains("dev"), "{}", api.message);

    h.client.delete_vm("dev").await.unwrap();
    assert!(
        h.client
            .get_vm("dev")
            .await
            .unwrap_err()
            .is_code(ErrorCode::NotFound)
    );
    // Released allocations are reused.
    let again = h.create("dev2", "base").await;
    assert_eq!(again.network.ip, "172.30.0.2");
    h.client.delete_vm("dev2").await.unwrap();
    h.client.delete_vm(&generated.name).await.unwrap();
    let image = h.client.get_image("base").await.unwrap();
    h.client.delete_image("base").await.unwrap();
    assert!(
        !h.paths.image_dir(&image.id).exists(),
        "image files left behind"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_vm_requests_are_refused_and_store_nothing() {
    let mut h = Harness::start().await;
    h.register("base").await;
    h.create("taken", "base").await;
    let host_cpus = h.client.capacity().await.unwrap().cpu.host_cpus as i64;
    let base = CreateVmRequest {
        name: Some("new".into()),
        image: Some("base".into()),
        start: Some(false),
        ..Default::default()
    };
    let port = |address: Option<&str>, host_port, guest_port| banger_api::PublishPortRequest {
        address: address.map(str::to_owned),
        host_port,
        guest_port,
    };
    let cases: Vec<(CreateVmRequest, ErrorCode, &str)> = vec![
        (
            CreateVmRequest {
                vcpus: Some(0),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "at least 1 (got 0)",
        ),
        (
            CreateVmRequest {
                publish: vec![port(None, 0, 80)],
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "host port must be from 1 to 65535 (got 0)",
        ),
        (
            CreateVmRequest {
                publish: vec![port(None, 18080, 65536)],
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "guest port must be from 1 to 65535 (got 65536)",
        ),
        (
            CreateVmRequest {
                publish: vec![port(None, 18080, 80), port(None, 18080, 81)],
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "host port 18080 is published twice",
        ),
        (
            CreateVmRequest {
                publish: vec![port(Some("localhost"), 18080, 80)],
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "is not an IPv4 address",
        ),
        (
            CreateVmRequest {
                vcpus: Some(-2),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "got -2",
        ),
        (
            CreateVmRequest {
                vcpus: Some(host_cpus + 1),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "CPUs on this host",
        ),
        (
            CreateVmRequest {
                memory_mib: Some(0),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "at least 128 MiB",
        ),
        (
            CreateVmRequest {
                memory_mib: Some(-512),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "got -512",
        ),
        (
            CreateVmRequest {
                memory_mib: Some(1 << 30),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "this host's RAM",
        ),
        (
            CreateVmRequest {
                disk_bytes: Some(1024),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "disk size must be at least",
        ),
        (
            CreateVmRequest {
                work_disk_bytes: Some(-1),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "work disk size",
        ),
        (
            CreateVmRequest {
                name: Some("No_Good".into()),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "contains",
        ),
        (
            CreateVmRequest {
                name: Some("taken".into()),
                ..base.clone()
            },
            ErrorCode::AlreadyExists,
            "already exists",
        ),
        (
            CreateVmRequest {
                image: Some("ghost".into()),
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "unknown image",
        ),
        (
            CreateVmRequest {
                image: None,
                ..base.clone()
            },
            ErrorCode::InvalidInput,
            "\"debian\"",
        ),
    ];
    for (req, code, needle) in cases {
        let err = h.client.create_vm(&req).await.unwrap_err();
        let api = err.api().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(api.code, code, "{req:?}: {api:?}");
        assert!(
            api.message.contains(needle),
            "{needle:?} not in {:?}",
            api.message
        );
        assert!(api.hint.is_some(), "no hint for {req:?}");
    }
    let err = h
        .client
        .update_vm("taken", &UpdateVmRequest::default())
        .await
        .unwrap_err();
    assert!(err.api().unwrap().message.contains("nothing to change"));
    let err = h
        .client
        .update_vm(
            "taken",
            &UpdateVmRequest {
                vcpus: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidInput));
    let vms = h.client.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1, "a refused request stored something");
    assert_eq!(vms[0].vcpus, 1);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_not_500s() {
    let mut h = Harness::start().await;
    let json = "Content-Type: application/json\r\n";
    let cases = [
        (
            http("POST", "/v1/vms", json, "{not json"),
            400,
            "invalid_input",
            "malformed JSON",
        ),
        (
            http("POST", "/v1/vms", json, r#"{"nmae":"x"}"#),
            400,
            "invalid_input",
            "unknown field `nmae`",
        ),
        (
            http("POST", "/v1/vms", json, r#"{"vcpus":"two"}"#),
            400,
            "invalid_input",
            "vcpus",
        ),
        (
            http("POST", "/v1/vms", "", r#"{}"#),
            415,
            "unsupported_media_type",
            "JSON",
        ),
        (
            http(
                "POST",
                "/v1/vms",
                json,
                &format!(r#"{{"name":"{}"}}"#, "a".repeat(70_000)),
            ),
            413,
            "payload_too_large",
            "larger than",
        ),
        (
            http("GET", "/v1/nothing", "", ""),
            404,
            "not_found",
            "no such API route",
        ),
        (
            http("PUT", "/v1/vms", json, "{}"),
            405,
            "method_not_allowed",
            "method",
        ),
        (
            http("GET", "/v1/vms/ghost", "", ""),
            404,
            "not_found",
            "ghost",
        ),
        (
            http("GET", "/v1/operations/op-nope", "", ""),
            404,
            "not_found",
            "op-nope",
        ),
    ];
    for (request, status, code, needle) in cases {
        let (got, body) = h.raw_http(&request).await;
        assert_eq!(got, status, "{request:.60}: {body}");
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    }
    assert!(h.client.list_vms().await.unwrap().is_empty());
    h.stop().await;
}

/// A body that is not the JSON object a route documents is refused, never read as a
/// default-filled request: serde would read a struct from an array, and routes that take no
/// body used to ignore one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_typed_strictly() {
    let mut h = Harness::start().await;
    let image = h.register("base").await;
    let vm = h.create("strict", &image.name).await;
    let json = "Content-Type: application/json\r\n";
    let cases = [
        (http("POST", "/v1/vms", json, "null"), 400, "not null"),
        (
            http("POST", "/v1/vms", json, r#"["x","base"]"#),
            400,
            "not an array",
        ),
        (http("POST", "/v1/vms", json, "7"), 400, "not a number"),
        (
            http("PATCH", "/v1/vms/strict", json, "[2]"),
            400,
            "not an array",
        ),
        (
            http("PATCH", "/v1/vms/strict", json, "null"),
            400,
            "not null",
        ),
        (
            http("PATCH", "/v1/vms/strict", json, r#"{"vcpus":2,"disk":1}"#),
            400,
            "unknown field `disk`",
        ),
        (
            http("PATCH", "/v1/vms/strict", "", r#"{"vcpus":2}"#),
            415,
            "JSON",
        ),
        (http("PATCH", "/v1/vms/strict", json, ""), 400, "EOF"),
        (
            http("POST", "/v1/vms/strict/start", json, r#"{"force":true}"#),
            400,
            "takes no request body",
        ),
        (
            http("POST", "/v1/vms/strict/reset", json, "{}"),
            400,
            "takes no request body",
        ),
        (
            http("DELETE", "/v1/vms/strict", json, r#"{"keep_disks":true}"#),
            400,
            "takes no request body",
        ),
        (
            http("GET", "/v1/vms/strict/files/stat?path=/x&follow=1", "", ""),
            400,
            "follow",
        ),
    ];
    for (request, status, needle) in cases {
        let (got, body) = h.raw_http(&request).await;
        assert_eq!(got, status, "{request:.70}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{needle}: {body}"
        );
    }
    // Nothing acted: one VM, unchanged and still stopped.
    let vms = h.client.list_vms().await.unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].vcpus, vm.vcpus);
    assert_eq!(vms[0].state, banger_api::VmState::Stopped);
    h.stop().await;
}

/// `vm reset` refuses a VM that is not stopped, saying how to stop it; a stopped one keeps its
/// identity and gets a new overlay disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_gives_a_stopped_vm_a_new_root_and_keeps_the_rest() {
    let mut h = Harness::start().await;
    let image = h.register("base").await;
    let vm = h.create("fresh", &image.name).await;
    let (status, body) = h
        .raw_http(&http("POST", "/v1/vms/ghost/reset", "", ""))
        .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let reset = h.client.reset_vm("fresh").await;
    match reset {
        Ok(after) => {
            assert_eq!(after.network, vm.network);
            assert_eq!(after.name, vm.name);
        }
        // An image registered from bare files has no config-drive init: refused, untouched.
        Err(e) => assert!(e.is_code(banger_api::ErrorCode::Unsupported), "{e}"),
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_daemon_refuses_without_acting() {
    let mut h = Harness::start().await;
    h.register("base").await;
    let stale = Client::new(h.paths.socket()).expecting_build("some-other-build");
    let err = stale
        .create_vm(&CreateVmRequest {
            name: Some("x".into()),
            image: Some("base".into()),
            start: Some(false),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::DaemonOutdated), "{err}");
    assert!(h.client.list_vms().await.unwrap().is_empty());
    // It can still be asked who it is, which is how a client finds the pid to replace.
    stale.daemon_info().await.unwrap();
    // A client expecting this very build is served.
    let own = h.client.daemon_info().await.unwrap().build_id;
    Client::new(h.paths.socket())
        .expecting_build(own)
        .list_vms()
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_distinct_allocations() {
    let mut h = Harness::start().await;
    h.register("base").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .create_vm(&CreateVmRequest {
                    name: (i % 2 == 0).then(|| format!("vm-{i}")),
                    image: Some("base".into()),
                    vcpus: Some(1),
                    memory_mib: Some(128),
                    start: Some(false),
                    ..Default::default()
                })
                .await
                .unwrap()
                .vm
        }));
    }
    let mut vms = Vec::new();
    for t in tasks {
        vms.push(t.await.unwrap());
    }
    let distinct = |f: fn(&banger_api::Vm) -> String| {
        let mut v: Vec<String> = vms.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    assert_eq!(distinct(|v| v.name.clone()), 24);
    assert_eq!(distinct(|v| v.network.ip.clone()), 24);
    assert_eq!(distinct(|v| v.network.mac.clone()), 24);
    assert_eq!(distinct(|v| v.network.vsock_cid.to_string()), 24);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_reports_the_host_and_state_filesystem() {
    let mut h = Harness::start().await;
    h.register("base").await;
    h.create("dev", "base").await;
    let cap = h.client.capacity().await.unwrap();
    assert!(cap.cpu.host_cpus >= 1);
    assert_eq!(cap.cpu.reserved_vcpus, 0, "a stopped VM reserves nothing");
    assert_eq!(cap.memory.reserved_bytes, 0);
    assert!(cap.memory.host_bytes >= cap.memory.available_bytes);
    assert!(cap.disk.fs_total_bytes >= cap.disk.fs_available_bytes);
    assert!(
        cap.disk.image_allocated_bytes > 0,
        "the image store holds the registered files"
    );
    assert_eq!(cap.disk.path, h.paths.state_dir.display().to_string());
    assert_eq!((cap.vms_total, cap.vms_running), (1, 0));
    // Admission control is on by default: 4 vCPUs per host CPU, the host's memory less 1G.
    assert_eq!(cap.cpu.vcpu_limit, Some(cap.cpu.host_cpus * 4));
    assert_eq!(
        cap.memory.limit_bytes,
        Some(cap.memory.host_bytes - banger_api::validate::GIB)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_daemon_restart() {
    let mut h = Harness::start().await;
    h.register("base").await;
    let vm = h.create("dev", "base").await;
    h.stop().await;
    let daemon = banger_daemon::start(h.paths.clone()).await.unwrap();
    h.daemon = Some(daemon);
    assert_eq!(without_seed(h.client.get_vm("dev").await.unwrap()), vm);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_stops_the_daemon_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let paths = support::home(dir.path(), "[defaults]\nvcpu = 2\n");
    let err = banger_daemon::start(paths.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("vcpu"), "{err}");
    assert!(
        err.contains(&paths.config_file.display().to_string()),
        "{err}"
    );
    assert!(!Path::new(&paths.socket()).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_every_check_with_a_fix_for_each_problem() {
    let mut h = Harness::start().await;
    let report = h.client.doctor().await.unwrap();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    for expected in [
        "kvm",
        "firecracker",
        "tun",
        "nftables",
        "disk",
        "e2fsprogs",
        "openssh",
        "dns",
        "host-dns",
    ] {
        assert!(
            names.contains(&expected),
            "no {expected} check in {names:?}"
        );
    }
    for check in &report.checks {
        if check.status != banger_api::DoctorCheckStatus::Ok {
            assert!(check.fix.is_some(), "{} has no fix: {check:?}", check.name);
        }
    }
    // On a kvm_pvm host the KVM check must say plainly that stock guests cannot boot.
    if Path::new("/sys/module/kvm_pvm").exists() {
        let kvm = report.checks.iter().find(|c| c.name == "kvm").unwrap();
        assert!(kvm.detail.contains("kvm_pvm"), "{kvm:?}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_configured_firecracker_binary() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-firecracker");
    let paths = support::home(
        dir.path(),
        &format!(
            "firecracker_bin = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
            missing.display()
        ),
    );
    let files = dir.path().join("files");
    let mut h = Harness::with(dir, paths, files).await;
    let report = h.client.doctor().await.unwrap();
    let check = report
        .checks
        .iter()
        .find(|c| c.name == "firecracker")
        .unwrap();
    assert_eq!(
        check.status,
        banger_api::DoctorCheckStatus::Fail,
        "{check:?}"
    );
    assert!(
        check.detail.contains(&missing.display().to_string()),
        "{check:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showing_a_vm_says_whether_its_images_work_seed_changed() {
    let mut h = Harness::start().await;
    let image = h.register("base").await;
    h.create("dev", "base").await;

    let listed = h.client.list_vms().await.unwrap();
    assert!(listed[0].work_seed.is_none(), "lists do not read seeds");
    let seed = h.client.get_vm("dev").await.unwrap().work_seed.unwrap();
    assert!(!seed.changed, "{seed:?}");
    assert_eq!(seed.vm.as_deref(), Some(seed.image.as_str()));
    assert_eq!(seed.seed_dir, None, "a registered image seeds nothing");

    // The image's seed changes under the VM (here: it gains one).
    let dir = h.paths.image_dir(&image.id).join("work-seed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".profile"), "export EDITOR=vi\n").unwrap();
    let seed = h.client.get_vm("dev").await.unwrap().work_seed.unwrap();
    assert!(seed.changed, "{seed:?}");
    assert_ne!(seed.vm.as_deref(), Some(seed.image.as_str()));
    assert_eq!(seed.seed_dir, Some(dir.display().to_string()));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_image_imports_under_another_name() {
    let mut h = Harness::start().await;
    let original = h.register("base").await;
    let file = h.files.join("base.banger-image");
    let export = |path: &Path, force| ExportImageRequest {
        path: path.display().to_string(),
        force,
    };

    let op = h
        .client
        .export_image("base", &export(&file, None))
        .await
        .unwrap();
    let names: Vec<_> = op.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "pack kernel",
            "pack initrd",
            "pack rootfs",
            "pack work seed",
            "write file"
        ]
    );
    let done = h.succeeds(&op).await;
    let exported: ExportedImage = serde_json::from_value(done.result.unwrap()).unwrap();
    assert_eq!(exported.path, file.display().to_string());
    assert_eq!(exported.bytes, std::fs::metadata(&file).unwrap().len());

    // Refused before anything starts, each with its reason.
    let refusals = [
        (
            "base",
            export(Path::new("relative.banger-image"), None),
            ErrorCode::InvalidInput,
            "not absolute",
        ),
        (
            "base",
            export(&file, None),
            ErrorCode::AlreadyExists,
            "already exists",
        ),
        (
            "nope",
            export(&h.files.join("x"), None),
            ErrorCode::NotFound,
            "no image named",
        ),
        (
            "base",
            export(&h.files.join("missing/x"), None),
            ErrorCode::InvalidInput,
            "does not exist",
        ),
    ];
    for (name, request, code, needle) in refusals {
        let err = h.client.export_image(name, &request).await.unwrap_err();
        let api = err.api().unwrap_or_else(|| panic!("{err}"));
        assert_eq!(api.code, code, "{api:?}");
        assert!(api.message.contains(needle), "{needle}: {api:?}");
    }
    let err = h
        .client
        .export_image("base", &export(&file, None))
        .await
        .unwrap_err();
    assert!(
        err.api()
            .unwrap()
            .hint
            .as_deref()
            .unwrap()
            .contains("--force")
    );
    let op = h
        .client
        .export_image("base", &export(&file, Some(true)))
        .await
        .unwrap();
    h.succeeds(&op).await;

    // Importing under the exported name collides, and says how to avoid it.
    let import = |name: Option<&str>, path: &Path| ImportImageRequest {
        path: path.display().to_string(),
        name: name.map(str::to_owned),
    };
    let err = h
        .client
        .import_image(&import(None, &file))
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.code, ErrorCode::AlreadyExists);
    assert!(api.hint.as_deref().unwrap().contains("--name"), "{api:?}");
    let err = h
        .client
        .import_image(&import(Some("Bad_Name"), &file))
        .await
        .unwrap_err();
    assert!(err.is_code(ErrorCode::InvalidInput));

    let op = h
        .client
        .import_image(&import(Some("copy"), &file))
        .await
        .unwrap();
    assert_eq!(op.target, "copy");
    assert_eq!(op.stages.last().unwrap().name, "record");
    h.succeeds(&op).await;
    let copy = h.client.get_image("copy").await.unwrap();
    assert_eq!(copy.source, ImageSource::Imported);
    assert_ne!(copy.id, original.id);
    let mut expected = original.manifest.clone();
    expected.name = "copy".into();
    expected.imported_from = copy.manifest.imported_from.clone();
    assert!(
        expected
            .imported_from
            .as_deref()
            .unwrap()
            .contains("base.banger-image")
    );
    assert_eq!(copy.manifest, expected);
    let dir = h.paths.image_dir(&copy.id);
    for (stored, original) in [
        (&copy.files.kernel, &original.files.kernel),
        (&copy.files.rootfs, &original.files.rootfs),
    ] {
        assert!(Path::new(&stored.path).starts_with(&dir));
        assert_eq!(
            std::fs::read(&stored.path).unwrap(),
            std::fs::read(&original.path).unwrap()
        );
    }
    assert!(dir.join("manifest.json").is_file());
    // The imported image is usable like any other.
    h.create("dev", "copy").await;
    assert_eq!(h.client.list_images().await.unwrap().len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_import_fails_and_leaves_no_image() {
    let mut h = Harness::start().await;
    h.register("base").await;
    let file = h.files.join("base.banger-image");
    let op = h
        .client
        .export_image(
            "base",
            &ExportImageRequest {
                path: file.display().to_string(),
                force: None,
            },
        )
        .await
        .unwrap();
    h.succeeds(&op).await;
    let images_before = std::fs::read_dir(h.paths.images_dir()).unwrap().count();

    // Cut short: its label and manifest still read, so the import starts, then fails.
    let bytes = std::fs::read(&file).unwrap();
    let short = h.files.join("short.banger-image");
    std::fs::write(&short, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let op = h
        .client
        .import_image(&ImportImageRequest {
            path: short.display().to_string(),
            name: Some("broken".into()),
        })
        .await
        .unwrap();
    let done = h.watch(&op).await;
    assert_eq!(done.state, OperationState::Failed, "{done:?}");
    let error = done.error.unwrap();
    assert_eq!(error.code, ErrorCode::InvalidInput, "{error:?}");
    assert!(error.message.contains("is damaged"), "{error:?}");
    assert!(
        h.client
            .get_image("broken")
            .await
            .unwrap_err()
            .is_code(ErrorCode::NotFound)
    );
    assert_eq!(
        std::fs::read_dir(h.paths.images_dir()).unwrap().count(),
        images_before,
        "the failed import left a directory"
    );

    // Not an archive at all: refused up front.
    let err = h
        .client
        .import_image(&ImportImageRequest {
            path: h.boot_files().0.display().to_string(),
            name: Some("kernel".into()),
        })
        .await
        .unwrap_err();
    let api = err.api().unwrap();
    assert_eq!(api.code, ErrorCode::InvalidInput);
    assert!(
        api.message.contains("is not a banger image archive"),
        "{api:?}"
    );
    assert_eq!(h.client.list_images().await.unwrap().len(), 1);
    h.stop().await;
}

/// The published-port routes on a stopped VM: recorded and listed (not listening until the
/// VM starts), bad input refused as JSON errors with nothing stored, removal by host port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_of_a_stopped_vm_are_recorded_checked_and_removed() {
    let mut h = Harness::start().await;
    h.register("base").await;
    h.create("dev", "base").await;
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = "Content-Type: application/json\r\n";
    let body = format!(r#"{{"host_port":{free},"guest_port":4096}}"#);
    let (status, vm) = h
        .raw_http(&http("POST", "/v1/vms/dev/ports/published", json, &body))
        .await;
    assert_eq!(status, 201, "{vm}");
    assert_eq!(
        vm["published_ports"],
        serde_json::json!([{"address": "127.0.0.1", "host_port": free, "guest_port": 4096}])
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", free)).is_ok(),
        "a stopped VM's port does not listen"
    );
    let (status, list) = h
        .raw_http(&http("GET", "/v1/vms/dev/ports/published", "", ""))
        .await;
    assert_eq!(status, 200);
    assert_eq!(list, vm["published_ports"]);

    for (body, status, code, needle) in [
        (
            format!(r#"{{"host_port":{free},"guest_port":80}}"#),
            409,
            "already_exists",
            "already publishes host port",
        ),
        (
            r#"{"host_port":0,"guest_port":80}"#.to_owned(),
            400,
            "invalid_input",
            "host port must be from 1 to 65535",
        ),
        (
            r#"{"host_port":18080,"guest_port":80,"protocol":"udp"}"#.to_owned(),
            400,
            "invalid_input",
            "unknown field `protocol`",
        ),
    ] {
        let (got, error) = h
            .raw_http(&http("POST", "/v1/vms/dev/ports/published", json, &body))
            .await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["code"], code, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{body}: {error}"
        );
    }
    assert_eq!(
        h.client.get_vm("dev").await.unwrap().published_ports.len(),
        1
    );

    let (status, error) = h
        .raw_http(&http("DELETE", "/v1/vms/dev/ports/published/http", "", ""))
        .await;
    assert_eq!(
        (status, &error["code"]),
        (400, &serde_json::json!("invalid_input"))
    );
    let unpublish = http(
        "DELETE",
        &format!("/v1/vms/dev/ports/published/{free}"),
        "",
        "",
    );
    let (status, vm) = h.raw_http(&unpublish).await;
    assert_eq!(status, 200, "{vm}");
    assert!(vm.get("published_ports").is_none(), "{vm}");
    let (status, error) = h.raw_http(&unpublish).await;
    assert_eq!(
        (status, &error["code"]),
        (404, &serde_json::json!("not_found"))
    );
    h.stop().await;
}

/// An image's ports: every VM of it publishes them on loopback, each on its own number when
/// free and on a spare port otherwise, unless the create publishes the guest port itself; a bad
/// port is refused before anything is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_images_ports_are_published_by_its_vms() {
    let mut h = Harness::start().await;
    let (kernel, rootfs, initrd) = h.boot_files();
    let request = |publish: Vec<i64>| RegisterImageRequest {
        publish,
        name: "web".into(),
        kernel: kernel.display().to_string(),
        initrd: Some(initrd.display().to_string()),
        rootfs: rootfs.display().to_string(),
    };
    let err = h
        .client
        .register_image(&request(vec![0]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("guest port 0"), "{err}");
    // A guest port whose own number is held on this host, so the spare is used.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = i64::from(holder.local_addr().unwrap().port());
    let op = h.client.register_image(&request(vec![held])).await.unwrap();
    h.succeeds(&op).await;
    let image = h.client.get_image("web").await.unwrap();
    assert_eq!(image.manifest.publish, [held as u16]);

    let a = h.create("a", "web").await;
    let b = h.create("b", "web").await;
    let host_of = |vm: &banger_api::Vm| {
        assert_eq!(vm.published_ports.len(), 1, "{vm:?}");
        assert_eq!(vm.published_ports[0].guest_port, held as u16);
        assert_eq!(vm.published_ports[0].address, "127.0.0.1");
        vm.published_ports[0].host_port
    };
    let (ha, hb) = (host_of(&a), host_of(&b));
    assert!(ha >= 49152 && hb >= 49152 && ha != hb, "{ha} {hb}");

    // A create that publishes the guest port itself decides alone.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = h
        .client
        .create_vm(&CreateVmRequest {
            name: Some("c".into()),
            image: Some("web".into()),
            vcpus: Some(1),
            memory_mib: Some(256),
            start: Some(false),
            publish: vec![banger_api::PublishPortRequest {
                address: None,
                host_port: i64::from(free),
                guest_port: held,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .vm;
    assert_eq!(c.published_ports.len(), 1, "{c:?}");
    assert_eq!(c.published_ports[0].host_port, free);
    drop(holder);
    h.stop().await;
}
