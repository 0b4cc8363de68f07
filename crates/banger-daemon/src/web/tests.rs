//! Handler tests: a real daemon (temporary XDG directories, the console on port 0) whose web
//! router is driven with `tower::ServiceExt::oneshot`, plus a few requests over the real TCP
//! listener. Each security rule has a test that a request breaking it is refused and changes
//! nothing.
//!
//! They stay in one file because every test drives the same fixture, a [`Web`] daemon and a
//! signed-in [`Browser`], and the tests of one rule read best side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use banger_api::paths::Paths;
use banger_api::{
    Client, ErrorCode, Image, ImageFiles, ImageManifest, OperationKind, OperationState, Timestamp,
    VmState, VmmKind,
};
use banger_host::network::Privilege;
use banger_host::runner::{
    CommandOutput, CommandRunner, CommandSpec, FakeRunner, Matcher, RealRunner, RunError,
};
use banger_store::NewVm;
use banger_test_support::fixtures;
use banger_vmm::Accel;
use banger_vmm::firecracker::fake::{FIRST_PID, FakeFirecracker};
use banger_vmm::qemu::fake::FakeQemu;
use tower::ServiceExt;

use super::auth::{Auth, SESSION_COOKIE, SESSION_TTL, unix_now};
use crate::machine::disks;
use crate::{Daemon, HostDeps, RunningDaemon};

struct Web {
    dir: tempfile::TempDir,
    running: Option<RunningDaemon>,
    d: Arc<Daemon>,
    router: Router,
    /// `127.0.0.1:PORT`.
    host: String,
}

/// A signed-in browser: its cookie header and CSRF token.
#[derive(Clone)]
struct Browser {
    cookie: String,
    csrf: String,
}

fn paths(root: &std::path::Path) -> Paths {
    Paths {
        config_file: root.join("config/banger/config.toml"),
        state_dir: root.join("state/banger"),
        runtime_dir: root.join("run/banger"),
    }
}

impl Web {
    async fn start() -> Web {
        Self::with_config("[web]\nlisten = \"127.0.0.1:0\"\n").await
    }

    async fn with_config(config: &str) -> Web {
        Self::launch(config, HostDeps::real()).await
    }

    /// A daemon whose host is fake (banger-vmm's in-memory Firecracker, a recording runner
    /// for `ip`, `nft` and `sysctl`; the disk tools run for real), so VMs really start, run,
    /// pause and stop without a VMM or root.
    async fn with_fake_host() -> (Web, FakeFirecracker) {
        Self::with_fake_host_as(Privilege::Root, FakeRunner::new()).await
    }

    /// [`Self::with_fake_host`] running privileged commands as `privilege` says, through
    /// `net` (which may script `sudo`'s answers).
    async fn with_fake_host_as(privilege: Privilege, net: FakeRunner) -> (Web, FakeFirecracker) {
        Self::with_fake_host_on(privilege, net, None).await
    }

    /// [`Self::with_fake_host_as`] on a host of `host`'s CPUs and memory (`None`: this one's).
    async fn with_fake_host_on(
        privilege: Privilege,
        net: FakeRunner,
        host: Option<crate::host::HostFacts>,
    ) -> (Web, FakeFirecracker) {
        let fc = FakeFirecracker::new();
        let net = net.respond(
            Matcher::prefix("sysctl", ["-n"]),
            CommandOutput::with_stdout("0\n"),
        );
        let deps = HostDeps {
            runner: Arc::new(SplitRunner { net: Arc::new(net) }),
            firecracker: Some(fc.backend()),
            qemu: Some(FakeQemu::new().backend(Accel::Tcg)),
            preflight: false,
            privilege: Some(privilege),
            host,
        };
        // No spare Firecracker: tests count the fake's processes, and a spare started 300 ms
        // after each create (sooner or later than a step, depending on the machine's load)
        // would be among them.
        let config = "vmm = \"firecracker\"\nspare_vmm = false\n[defaults]\n\
                      stop_timeout = \"100ms\"\n[web]\nlisten = \"127.0.0.1:0\"\n";
        (Self::launch(config, deps).await, fc)
    }

    async fn launch(config: &str, deps: HostDeps) -> Web {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        std::fs::create_dir_all(paths.config_file.parent().unwrap()).unwrap();
        std::fs::write(&paths.config_file, config).unwrap();
        let running = crate::start_with(paths, deps).await.unwrap();
        let d = running.daemon.clone();
        let host = d
            .web
            .info()
            .url
            .map(|u| {
                u.trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            })
            .unwrap_or_default();
        Web {
            dir,
            router: super::router(d.clone()),
            running: Some(running),
            d,
            host,
        }
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    fn auth(&self) -> &Auth {
        &self.d.web.serving().unwrap().auth
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(req).await.unwrap()
    }

    fn get(&self, path: &str, browser: Option<&Browser>) -> Request<Body> {
        let mut req = Request::get(path).header(header::HOST, &self.host);
        if let Some(b) = browser {
            req = req.header(header::COOKIE, &b.cookie);
        }
        req.body(Body::empty()).unwrap()
    }

    fn post(
        &self,
        path: &str,
        browser: Option<&Browser>,
        fields: &[(&str, &str)],
    ) -> Request<Body> {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", super::views::encode(v)))
            .collect();
        let mut req = Request::post(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(b) = browser {
            req = req.header(header::COOKIE, &b.cookie);
        }
        req.body(Body::from(body.join("&"))).unwrap()
    }

    /// Signs in the way a user does: a token from the console, spent at `/login`.
    async fn sign_in(&self) -> Browser {
        let login = self.d.web.login().unwrap();
        let path = login
            .url
            .strip_prefix(&format!("http://{}", self.host))
            .unwrap();
        let response = self.send(self.get(path, None)).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        let value = cookie.strip_prefix(&format!("{SESSION_COOKIE}=")).unwrap();
        let session = self.auth().verify_cookie(value, unix_now()).unwrap();
        Browser {
            csrf: self.auth().csrf_token(&session),
            cookie,
        }
    }

    /// A stored image record (its files need not exist for pages and VM records).
    fn insert_image(&self, name: &str) -> Image {
        self.insert_image_at(name, "/images/x/vmlinux", "/images/x/rootfs.ext4")
    }

    /// An image whose files exist, which a VM can start from, and whose init reads config
    /// drives (so a VM of it can have its root reset).
    fn insert_bootable_image(&self, name: &str) -> Image {
        let (kernel, rootfs, _) = self.boot_files();
        let mut image =
            self.insert_image_at(name, kernel.to_str().unwrap(), rootfs.to_str().unwrap());
        self.d.store.delete_image(&image.id).unwrap();
        image.manifest.init_features = vec![banger_init::FEATURE_CONFIG_DRIVE.to_owned()];
        self.d.store.insert_image(&image).unwrap();
        image
    }

    fn insert_image_at(&self, name: &str, kernel: &str, rootfs: &str) -> Image {
        let file = |path: &str, bytes| fixtures::image_file(path, bytes, bytes / 2);
        let image = Image {
            id: format!("{:016x}", rand::random::<u64>()),
            files: ImageFiles {
                kernel: file(kernel, 4096),
                initrd: None,
                rootfs: file(rootfs, 16 << 20),
            },
            manifest: ImageManifest {
                kernel_version: Some("6.1.0-test".into()),
                created_at: Timestamp::now(),
                ..fixtures::manifest(name)
            },
            created_at: Timestamp::now(),
            ..fixtures::image(name)
        };
        self.d.store.insert_image(&image).unwrap();
        image
    }

    /// A VM record stored directly, bypassing the API's name rules.
    fn insert_vm(&self, name: &str, image: &Image) {
        self.d
            .store
            .create_vm(
                &NewVm {
                    name: Some(name.into()),
                    image_id: image.id.clone(),
                    vcpus: 1,
                    memory_mib: 256,
                    disk_bytes: 1 << 30,
                    work_disk_bytes: 1 << 30,
                    nat: false,
                    vmm: VmmKind::Auto,
                    state: VmState::Stopped,
                    published_ports: Vec::new(),
                    pool: None,
                },
                &self.d.pool,
            )
            .unwrap();
    }

    fn vm_names(&self) -> Vec<String> {
        self.d
            .store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// A kernel, an ext4 rootfs and an initrd that pass registration's checks.
    fn boot_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let files = self.dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        let kernel = files.join("vmlinux");
        std::fs::write(
            &kernel,
            banger_test_support::fake_vmlinux("6.1.0-banger-test"),
        )
        .unwrap();
        let rootfs = files.join("rootfs.ext4");
        std::fs::File::create(&rootfs)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        RealRunner
            .run(&CommandSpec::new("mkfs.ext4").args(["-q", "-F", rootfs.to_str().unwrap()]))
            .unwrap();
        let initrd = files.join("initrd");
        let mut cpio = b"070701".to_vec();
        cpio.resize(512, 0);
        std::fs::write(&initrd, cpio).unwrap();
        (kernel, rootfs, initrd)
    }
}

/// Network commands go to the fake, everything else (mkfs.ext4, debugfs, ssh-keygen) runs.
#[derive(Debug)]
struct SplitRunner {
    net: Arc<FakeRunner>,
}

impl CommandRunner for SplitRunner {
    fn run(&self, cmd: &CommandSpec) -> Result<CommandOutput, RunError> {
        if ["ip", "nft", "sysctl", "sudo"].contains(&cmd.program.as_str()) {
            self.net.run(cmd)
        } else {
            RealRunner.run(cmd)
        }
    }
}

/// An operation that runs until it is cancelled (the daemon cancels it when it stops).
fn slow_operation(w: &Web) -> banger_api::Operation {
    w.d.ops
        .spawn(OperationKind::RegisterImage, "slow", &["wait"], |cx| {
            cx.begin("wait");
            cx.progress("wait", 1, 4, "bytes");
            for _ in 0..3000 {
                cx.check_cancelled()?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(serde_json::Value::Null)
        })
}

async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn location(response: &Response<Body>) -> &str {
    response.headers()[header::LOCATION].to_str().unwrap()
}

/// Every route of the console, with a method that reads.
const PAGES: &[&str] = &[
    "/",
    "/vms",
    "/vms/dev",
    "/vms/dev/delete",
    "/vms/dev/stop",
    "/vms/dev/restart",
    "/vms/dev/reset",
    "/vms/dev/console",
    "/vms/dev/guest",
    "/new/vm",
    "/images",
    "/images/base",
    "/images/bootstrap",
    "/new/image",
    "/new/build",
    "/snapshots",
    "/snapshots/ready/delete",
    "/picker?field=kernel",
    "/operations",
    "/operations/op-1",
    "/operations/op-1/json",
    "/static/console.css",
    "/static/console.js",
    "/static/favicon.svg",
    "/no-such-page",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_and_asset_needs_a_session() {
    let w = Web::start().await;
    let image = w.insert_image("base");
    w.insert_vm("dev", &image);
    let forged = Browser {
        cookie: format!("{SESSION_COOKIE}=00000000000000000000000000000000.9999999999.00"),
        csrf: String::new(),
    };
    for path in PAGES {
        for browser in [None, Some(&forged)] {
            let response = w.send(w.get(path, browser)).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            let body = text(response).await;
            assert!(body.contains("banger web"), "{path}: {body}");
            assert!(!body.contains("dev"), "{path} leaked a VM name");
        }
    }
    // The same pages answer once signed in.
    let b = w.sign_in().await;
    for path in &PAGES[..PAGES.len() - 3] {
        let status = w.send(w.get(path, Some(&b))).await.status();
        // A stopped VM has nothing to stop or restart: its confirmation pages say so.
        let refused = status == StatusCode::CONFLICT
            && (path.ends_with("/stop") || path.ends_with("/restart"));
        // Nor has it a guest to ask.
        let no_guest = status == StatusCode::NO_CONTENT && path.ends_with("/guest");
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND || refused || no_guest,
            "{path}: {status}"
        );
    }
    // Changes without a session are refused too, and change nothing.
    let response = w
        .send(w.post("/vms/dev/delete", None, &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.vm_names(), ["dev"]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_token_works_once_then_never_again() {
    let w = Web::start().await;
    let login = w.d.web.login().unwrap();
    assert!(
        login
            .url
            .starts_with(&format!("http://{}/login?token=", w.host))
    );
    let expires_in = login.expires_at.as_millis() - Timestamp::now().as_millis();
    assert!((100_000..=120_000).contains(&expires_in), "{expires_in}");
    let path = login
        .url
        .strip_prefix(&format!("http://{}", w.host))
        .unwrap();

    let first = w.send(w.get(path, None)).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), "/");
    let cookie = first.headers()[header::SET_COOKIE].to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP on loopback: {cookie}"
    );

    let again = w.send(w.get(path, None)).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "reused token");
    assert!(again.headers().get(header::SET_COOKIE).is_none());
    assert!(text(again).await.contains("banger web"));

    let expired = w.d.web.login_valid_for(Duration::ZERO).unwrap();
    let path = expired
        .url
        .strip_prefix(&format!("http://{}", w.host))
        .unwrap();
    let response = w.send(w.get(path, None)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "expired token");

    for bad in ["/login", "/login?token=", "/login?token=0123abcd"] {
        let response = w.send(w.get(bad, None)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_forged_and_signed_out_sessions_are_refused() {
    let w = Web::start().await;
    let (_, old) = w.auth().new_session(unix_now() - SESSION_TTL.as_secs() - 1);
    let (_, foreign) = Auth::new([1; 32]).new_session(unix_now());
    for cookie in [old, foreign] {
        let b = Browser {
            cookie: format!("{SESSION_COOKIE}={cookie}"),
            csrf: String::new(),
        };
        let response = w.send(w.get("/", Some(&b))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let b = w.sign_in().await;
    assert_eq!(w.send(w.get("/", Some(&b))).await.status(), StatusCode::OK);
    let response = w
        .send(w.post("/logout", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cleared = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let response = w.send(w.get("/", Some(&b))).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "a signed-out cookie kept working"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_another_host_are_refused() {
    let (w, b) = Web::with_stopped_dev().await;
    let port = w.host.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let other_port = format!("127.0.0.1:{}", port.wrapping_add(1));
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        &format!("127.0.0.1.nip.io:{port}"),
        &other_port,
        "127.0.0.1",
    ] {
        // A DNS-rebinding page sends its own name with the victim's cookie.
        let req = Request::get("/")
            .header(header::HOST, host)
            .header(header::COOKIE, &b.cookie)
            .body(Body::empty())
            .unwrap();
        let response = w.send(req).await;
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST, "{host}");
        assert!(
            !text(response).await.contains("dev"),
            "{host} saw the VM list"
        );
        let req = Request::post("/vms/dev/delete")
            .header(header::HOST, host)
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={}", b.csrf)))
            .unwrap();
        assert_eq!(w.send(req).await.status(), StatusCode::MISDIRECTED_REQUEST);
    }
    let no_host = Request::get("/")
        .header(header::COOKIE, &b.cookie)
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        w.send(no_host).await.status(),
        StatusCode::MISDIRECTED_REQUEST
    );
    for host in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let req = Request::get("/")
            .header(header::HOST, &host)
            .header(header::COOKIE, &b.cookie)
            .body(Body::empty())
            .unwrap();
        assert_eq!(w.send(req).await.status(), StatusCode::OK, "{host}");
    }
    assert_eq!(w.vm_names(), ["dev"]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_changes_are_refused_even_with_a_good_token() {
    let (w, b) = Web::with_stopped_dev().await;
    let cases: &[(&str, &str)] = &[
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", &format!("https://{}", w.host)),
        ("origin", "http://localhost:1"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ];
    for (name, value) in cases {
        let mut req = w.post("/vms/dev/delete", Some(&b), &[("csrf", &b.csrf)]);
        req.headers_mut().insert(*name, value.parse().unwrap());
        let response = w.send(req).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{name}: {value}");
        assert_eq!(w.vm_names(), ["dev"], "{name}: {value} deleted the VM");
    }
    // What a browser sends from the console's own page is accepted.
    let mut req = w.post("/vms/dev/delete", Some(&b), &[("csrf", &b.csrf)]);
    let origin = format!("http://{}", w.host);
    req.headers_mut()
        .insert(header::ORIGIN, origin.parse().unwrap());
    req.headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    let response = w.send(req).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(w.vm_names().is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_needs_the_sessions_csrf_token() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let other = w.sign_in().await;
    let image = w.insert_image("base");
    w.insert_vm("dev", &image);
    let id = slow_operation(&w).id;
    let create: &[(&str, &str)] = &[
        ("name", "new"),
        ("image", "base"),
        ("vcpus", "1"),
        ("memory_mib", "256"),
        ("disk", "1G"),
        ("work_disk", "1G"),
        ("vmm", "auto"),
    ];
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/vms".into(), create.to_vec()),
        ("/vms/dev/delete".into(), vec![]),
        ("/vms/dev/start".into(), vec![]),
        ("/vms/dev/stop".into(), vec![]),
        ("/vms/dev/restart".into(), vec![]),
        ("/vms/dev/pause".into(), vec![]),
        ("/vms/dev/resume".into(), vec![]),
        ("/images".into(), vec![("name", "x")]),
        (
            "/images/bootstrap".into(),
            vec![("name", "fresh"), ("suite", "bookworm")],
        ),
        (
            "/new/build".into(),
            vec![("builtin", "opencode"), ("name", "fresh"), ("base", "base")],
        ),
        ("/vms/dev/promote".into(), vec![("name", "fresh")]),
        (format!("/operations/{id}/cancel"), vec![]),
        ("/logout".into(), vec![]),
    ];
    for (path, fields) in &posts {
        for csrf in [None, Some(""), Some("00ff"), Some(other.csrf.as_str())] {
            let mut all = fields.clone();
            if let Some(token) = csrf {
                all.push(("csrf", token));
            }
            let response = w.send(w.post(path, Some(&b), &all)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {csrf:?}");
            assert!(text(response).await.contains("Reload the page"));
        }
    }
    assert_eq!(w.vm_names(), ["dev"]);
    assert_eq!(w.vm("dev").state, VmState::Stopped);
    assert_eq!(w.d.ops.list().len(), 1, "only the slow operation");
    assert!(!w.d.ops.get(&id).unwrap().cancel_requested);
    assert_eq!(w.send(w.get("/", Some(&b))).await.status(), StatusCode::OK);
    // A body that is not a form is refused before anything runs.
    let mut req = w.post("/vms/dev/delete", Some(&b), &[("csrf", &b.csrf)]);
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    assert_eq!(
        w.send(req).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(w.vm_names(), ["dev"]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_change_nothing() {
    let (w, b) = Web::with_stopped_dev().await;
    let id = slow_operation(&w).id;
    // The confirmation page is a page: the VM is still there after it.
    let response = w.send(w.get("/vms/dev/delete", Some(&b))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("method=\"post\""));
    for path in [
        "/vms?name=new&image=base&vcpus=1&memory_mib=256&disk=1G&work_disk=1G&vmm=auto",
        "/images?name=x&kernel=/k&rootfs=/r",
        &format!("/operations/{id}/cancel"),
        "/logout",
        &format!("/vms/dev/delete?csrf={}", b.csrf),
        &format!("/vms/dev/start?csrf={}", b.csrf),
        &format!("/vms/dev/pause?csrf={}", b.csrf),
        &format!("/vms/dev/resume?csrf={}", b.csrf),
        &format!("/vms/dev/promote?csrf={}&name=snap", b.csrf),
        &format!("/new/build?csrf={}&name=snap&builtin=opencode", b.csrf),
    ] {
        let status = w.send(w.get(path, Some(&b))).await.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::METHOD_NOT_ALLOWED,
            "{path}: {status}"
        );
    }
    assert_eq!(w.vm_names(), ["dev"]);
    assert_eq!(w.vm("dev").state, VmState::Stopped);
    assert_eq!(w.d.ops.list().len(), 1, "only the slow operation");
    assert_eq!(w.d.store.list_images().unwrap().len(), 1);
    assert!(!w.d.ops.get(&id).unwrap().cancel_requested);
    assert_eq!(
        w.send(w.get("/", Some(&b))).await.status(),
        StatusCode::OK,
        "GET /logout signed out"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers_and_no_cors() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let mut requests = vec![
        w.get("/", Some(&b)),
        w.get("/", None),
        w.get("/static/console.js", Some(&b)),
        w.get("/no-such-page", Some(&b)),
        w.get("/login?token=nope", None),
        w.post("/vms", Some(&b), &[]),
    ];
    let mut wrong_host = w.get("/", Some(&b));
    wrong_host
        .headers_mut()
        .insert(header::HOST, "evil.example".parse().unwrap());
    requests.push(wrong_host);
    let mut cross = w.post("/logout", Some(&b), &[("csrf", &b.csrf)]);
    cross
        .headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    requests.push(cross);
    for mut req in requests {
        req.headers_mut()
            .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        let what = format!("{} {}", req.method(), req.uri());
        let response = w.send(req).await;
        let h = response.headers();
        assert_eq!(
            h["content-security-policy"],
            super::guard::CONTENT_SECURITY_POLICY,
            "{what}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        for directive in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{directive}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{what}");
        assert_eq!(h["referrer-policy"], "same-origin", "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(h["cache-control"], "no-store", "{what}");
        assert!(
            h.keys().all(|k| !k.as_str().starts_with("access-control-")),
            "{what}: CORS header"
        );
    }
    let js = w.send(w.get("/static/console.js", Some(&b))).await;
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_markup_render_as_text() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let evil = "<script>alert(1)</script>";
    let image = w.insert_image(evil);
    w.insert_vm(&format!("{evil}\"><img src=x>"), &image);
    let escaped = "&#60;script&#62;alert(1)&#60;/script&#62;";
    let encoded = super::views::encode(evil);
    for path in [
        "/".to_owned(),
        "/vms".to_owned(),
        "/images".to_owned(),
        format!("/images/{encoded}"),
        format!(
            "/vms/{}",
            super::views::encode(&format!("{evil}\"><img src=x>"))
        ),
        "/new/vm".to_owned(),
    ] {
        let response = w.send(w.get(&path, Some(&b))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = text(response).await;
        assert!(!body.contains("<script>"), "{path}: raw script tag\n{body}");
        assert!(!body.contains("<img"), "{path}: raw img tag");
        assert!(body.contains(escaped), "{path}: name missing\n{body}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_form_creates_a_stopped_vm_or_shows_errors_inline() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    w.insert_image("base");
    let form = w.send(w.get("/new/vm", Some(&b))).await;
    let body = text(form).await;
    assert!(
        body.contains("value=\"base\" checked"),
        "the only image is preselected"
    );
    assert!(
        body.contains("href=\"/images/base\""),
        "the image name is a link"
    );

    let mut fields = vec![
        ("csrf", b.csrf.as_str()),
        ("name", "dev"),
        ("image", "base"),
        ("vcpus", "1"),
        ("memory_mib", "256"),
        ("disk", "1G"),
        ("work_disk", "512M"),
        ("vmm", "qemu"),
        ("nat", "on"),
    ];
    let response = w.send(w.post("/vms", Some(&b), &fields)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/vms/dev?notice=vm-created");
    let vm = w.d.store.find_vm("dev").unwrap().unwrap();
    assert_eq!(vm.state, VmState::Stopped);
    assert_eq!((vm.vcpus, vm.memory_mib, vm.nat), (1, 256, true));
    assert_eq!(vm.work_disk_bytes, 512 << 20);
    assert_eq!(vm.vmm, VmmKind::Qemu);
    let page = text(w.send(w.get("/vms/dev?notice=vm-created", Some(&b))).await).await;
    assert!(page.contains("VM created."));
    assert!(page.contains(&vm.network.ip));

    // Every bad field is reported next to itself, at once, and nothing is stored.
    fields = vec![
        ("csrf", b.csrf.as_str()),
        ("name", "dev"),
        ("image", "ghost"),
        ("vcpus", "0"),
        ("memory_mib", "lots"),
        ("disk", "1K"),
        ("work_disk", "-1"),
        ("vmm", "xen"),
    ];
    let response = w.send(w.post("/vms", Some(&b), &fields)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = text(response).await;
    for (id, message) in [
        ("name", "already exists"),
        ("image", "unknown image"),
        ("vcpus", "at least 1 (got 0)"),
        ("memory_mib", "whole number"),
        ("disk", "disk size must be at least"),
        ("work_disk", "not a size"),
    ] {
        let marker = format!("id=\"{id}-error\">");
        let at = body
            .find(&marker)
            .unwrap_or_else(|| panic!("no inline error for {id}\n{body}"));
        let error = &body[at..at + 300.min(body.len() - at)];
        assert!(
            error.contains(&message.replace('"', "&#34;")),
            "{id}: {error}"
        );
    }
    assert!(body.contains("unknown VMM"), "vmm error");
    assert!(body.contains("value=\"lots\""), "what was typed is kept");
    assert_eq!(w.vm_names(), ["dev"]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_goes_through_a_confirmation() {
    let (w, b) = Web::with_stopped_dev().await;
    let page = text(w.send(w.get("/vms/dev", Some(&b))).await).await;
    assert!(page.contains("href=\"/vms/dev/delete\""));
    let confirm = text(w.send(w.get("/vms/dev/delete", Some(&b))).await).await;
    assert!(confirm.contains("action=\"/vms/dev/delete\""));
    assert!(confirm.contains(&b.csrf));
    let response = w
        .send(w.post("/vms/dev/delete", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/?notice=vm-deleted&name=dev");
    assert!(w.vm_names().is_empty());
    let dashboard = text(w.send(w.get(location(&response), Some(&b))).await).await;
    assert!(dashboard.contains("Deleted VM dev."));
    // Deleting again says what is wrong, in a page.
    let response = w
        .send(w.post("/vms/dev/delete", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(text(response).await.contains("no VM named"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_image_runs_an_operation_the_page_can_poll() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let (kernel, rootfs, initrd) = w.boot_files();

    let bad = [
        ("csrf", b.csrf.as_str()),
        ("name", "Bad_Name"),
        ("kernel", rootfs.to_str().unwrap()),
        ("initrd", "relative/initrd"),
        ("rootfs", ""),
    ];
    let response = w.send(w.post("/images", Some(&b), &bad)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = text(response).await;
    for id in ["name", "kernel", "initrd", "rootfs"] {
        assert!(body.contains(&format!("id=\"{id}-error\"")), "{id}\n{body}");
    }
    assert!(body.contains("choose the rootfs file"));
    assert!(w.d.ops.list().is_empty());

    let good = [
        ("csrf", b.csrf.as_str()),
        ("name", "base"),
        ("kernel", kernel.to_str().unwrap()),
        ("initrd", initrd.to_str().unwrap()),
        ("rootfs", rootfs.to_str().unwrap()),
    ];
    let response = w.send(w.post("/images", Some(&b), &good)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op_page = location(&response).to_owned();
    assert!(op_page.starts_with("/operations/op-"), "{op_page}");
    let id = op_page.trim_start_matches("/operations/").to_owned();
    let mut rx = w.d.ops.subscribe(&id).unwrap();
    rx.wait_for(|op| op.state.is_finished()).await.unwrap();
    let json = text(w.send(w.get(&format!("{op_page}/json"), Some(&b))).await).await;
    let op: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(op["state"], "succeeded", "{op}");
    assert_eq!(op["percent"], 100);
    assert_eq!(op["running"], false);
    assert_eq!(op["result"]["href"], "/images/base");
    assert_eq!(op["stages"].as_array().unwrap().len(), 5);
    let page = text(w.send(w.get(&op_page, Some(&b))).await).await;
    assert!(page.contains("href=\"/images/base\""));
    assert!(
        !page.contains("data-op="),
        "a finished operation is not polled"
    );
    let image = text(w.send(w.get("/images/base", Some(&b))).await).await;
    assert!(image.contains("6.1.0-banger-test"), "manifest shown");
    assert!(image.contains("manifest.json"));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_operations_are_polled_and_can_be_cancelled() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let first = slow_operation(&w);
    let href = format!("/operations/{}", first.id);
    let dashboard = text(w.send(w.get("/", Some(&b))).await).await;
    assert!(dashboard.contains("Operations in progress"));
    assert!(dashboard.contains(&format!("data-op=\"{href}/json\"")));
    let page = text(w.send(w.get(&href, Some(&b))).await).await;
    assert!(page.contains(&format!("action=\"{href}/cancel\"")));

    let response = w
        .send(w.post(&format!("{href}/cancel"), Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        format!("{href}?notice=cancel-requested")
    );
    assert_eq!(w.finish(&href).await.state, OperationState::Cancelled);
    let response = w
        .send(w.post("/operations/op-nope/cancel", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_picker_lists_a_directory_and_fills_the_form() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let (kernel, _, _) = w.boot_files();
    let files = kernel.parent().unwrap().to_str().unwrap().to_owned();
    let path = super::views::with_query(
        "/picker",
        &[("field", "kernel"), ("dir", &files), ("name", "base")],
    );
    let page = text(w.send(w.get(&path, Some(&b))).await).await;
    let pick = super::views::with_query(
        "/new/image",
        &[("name", "base"), ("kernel", kernel.to_str().unwrap())],
    );
    assert!(page.contains(&pick.replace('&', "&#38;")), "{page}");
    assert!(page.contains(">rootfs.ext4<"));
    let form = text(w.send(w.get(&pick, Some(&b))).await).await;
    assert!(form.contains(&format!("value=\"{}\"", kernel.display())));
    assert!(form.contains("value=\"base\""));

    let page = text(
        w.send(w.get("/picker?field=kernel&dir=relative", Some(&b)))
            .await,
    )
    .await;
    assert!(page.contains("is not an absolute path"));
    let response = w.send(w.get("/picker?field=evil&dir=/", Some(&b))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_api_mints_login_urls_for_the_real_listener() {
    let w = Web::start().await;
    let client = Client::new(w.d.paths.socket());
    let info = client.daemon_info().await.unwrap();
    let url = info.web.url.clone().unwrap();
    assert_eq!(url, format!("http://{}/", w.host));
    assert!(!url.ends_with(":0/"), "the real port: {url}");
    assert_eq!(info.web.error, None);
    let login = client.web_login().await.unwrap();
    assert!(login.url.starts_with(&format!("{url}login?token=")));
    let (_, doc) = client
        .raw(hyper::Method::GET, "/v1/openapi.json", None)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert!(doc["paths"].get("/v1/web/login").is_some());
    assert!(doc["components"]["schemas"].get("WebLogin").is_some());

    // Over real TCP: the login sets a cookie, which then opens the dashboard.
    let path = login
        .url
        .strip_prefix(&format!("http://{}", w.host))
        .unwrap();
    let (head, _) = raw_http(&w.host, path, "").await;
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (head, body) = raw_http(&w.host, "/", &format!("Cookie: {cookie}\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("<h1>Dashboard</h1>"));
    let (head, _) = raw_http(&w.host, "/", "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    let mode = std::fs::metadata(super::secret_path(&w.d.paths.state_dir))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    w.stop().await;
}

async fn raw_http(host: &str, path: &str, headers: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_leaves_the_daemon_serving_its_socket() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let w = Web::with_config(&format!("[web]\nlisten = \"127.0.0.1:{port}\"\n")).await;
    let client = Client::new(w.d.paths.socket());
    let info = client.daemon_info().await.unwrap();
    assert_eq!(info.web.url, None);
    let error = info.web.error.unwrap();
    assert!(
        error.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{error}"
    );
    let err = client.web_login().await.unwrap_err();
    assert!(err.is_code(ErrorCode::Unavailable), "{err}");
    assert!(
        err.api()
            .unwrap()
            .hint
            .as_deref()
            .unwrap()
            .contains("listen")
    );
    client.list_vms().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_console_says_so() {
    let w = Web::with_config("[web]\nenabled = false\n").await;
    let info = w.d.info().web;
    assert_eq!(info.url, None);
    assert!(info.error.unwrap().contains("web.enabled = false"));
    assert!(!super::secret_path(&w.d.paths.state_dir).exists());
    let err = w.d.web.login().unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    w.stop().await;
}

// ----- the VM lifecycle -----

impl Web {
    fn vm(&self, name: &str) -> banger_api::Vm {
        self.d.store.find_vm(name).unwrap().unwrap()
    }

    /// Waits for the operation whose page `op_page` is to finish; returns it.
    async fn finish(&self, op_page: &str) -> banger_api::Operation {
        let id = op_page
            .strip_prefix("/operations/")
            .unwrap_or_else(|| panic!("not an operation page: {op_page}"));
        let mut rx = self.d.ops.subscribe(id).unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            rx.wait_for(|op| op.state.is_finished()),
        )
        .await
        .expect("the operation did not finish within 30 s")
        .unwrap()
        .clone()
    }

    /// Posts `path` with this browser's token; returns where the 303 leads.
    async fn act(&self, b: &Browser, path: &str) -> String {
        let response = self
            .send(self.post(path, Some(b), &[("csrf", &b.csrf)]))
            .await;
        let status = response.status();
        if status != StatusCode::SEE_OTHER {
            panic!("{path}: {status}\n{}", text(response).await);
        }
        location(&response).to_owned()
    }

    async fn page(&self, b: &Browser, path: &str) -> String {
        let response = self.send(self.get(path, Some(b))).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        text(response).await
    }

    /// Creates VM `name` of image `base` through the form with "start" ticked, as `b`: the
    /// start's operation page (where the answer's 303 leads) and the operation as it ended.
    async fn create_started(&self, b: &Browser, name: &str) -> (String, banger_api::Operation) {
        let response = self
            .send(self.post("/vms", Some(b), &Web::vm_form(b, name, true)))
            .await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let op_page = location(&response).to_owned();
        let op = self.finish(&op_page).await;
        (op_page, op)
    }

    /// A daemon with image `base` and a stopped VM `dev` in its store, and a signed-in
    /// browser.
    async fn with_stopped_dev() -> (Web, Browser) {
        let w = Web::start().await;
        let b = w.sign_in().await;
        let image = w.insert_image("base");
        w.insert_vm("dev", &image);
        (w, b)
    }

    /// A daemon on the fake host with VM `dev` of a bootable image `base` started through the
    /// form by the signed-in browser it returns.
    async fn with_running_dev() -> (Web, FakeFirecracker, Browser) {
        let (w, fc) = Web::with_fake_host().await;
        let b = w.sign_in().await;
        w.insert_bootable_image("base");
        let (_, op) = w.create_started(&b, "dev").await;
        assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
        (w, fc, b)
    }

    fn vm_form<'a>(b: &'a Browser, name: &'a str, start: bool) -> Vec<(&'a str, &'a str)> {
        let mut fields = vec![
            ("csrf", b.csrf.as_str()),
            ("name", name),
            ("image", "base"),
            ("vcpus", "1"),
            ("memory_mib", "256"),
            ("disk", "256M"),
            ("work_disk", "64M"),
            ("vmm", "firecracker"),
        ];
        if start {
            fields.push(("start", "on"));
        }
        fields
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vm_page_drives_a_vm_through_its_lifecycle() {
    let (w, fc) = Web::with_fake_host().await;
    let b = w.sign_in().await;
    w.insert_bootable_image("base");
    let form = w.page(&b, "/new/vm").await;
    assert!(
        form.contains("name=\"start\" value=\"on\" checked"),
        "starting is the default"
    );

    // Creating with "start" ticked shows the start's progress, which links to the VM.
    let (op_page, op) = w.create_started(&b, "dev").await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(op.kind, OperationKind::StartVm);
    let page = w.page(&b, &op_page).await;
    assert!(
        page.contains("Start VM <a href=\"/vms/dev\">dev</a>"),
        "{page}"
    );
    let vm = w.vm("dev");
    assert_eq!(vm.state, VmState::Running);
    let runtime = vm.runtime.clone().unwrap();
    assert_eq!(runtime.pid, FIRST_PID);

    // The guest writes to its console; the page shows the end of it, as text.
    let log = w.d.paths.vm_dir(&vm.id).join(disks::CONSOLE_LOG);
    let mut lines: Vec<String> = (1..=60).map(|i| format!("boot line {i}")).collect();
    lines.push("\u{1b}[0;32m  OK  \u{1b}[0m Reached <b>multi-user</b> & more".into());
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let page = w.page(&b, "/vms/dev").await;
    for shown in [
        "<h2>Runtime</h2>",
        &format!("<dt>VMM pid</dt><dd>{FIRST_PID}</dd>"),
        &format!("<code>{}</code>", runtime.tap),
        "<dt>Backend</dt><dd>firecracker</dd>",
        "<h2>Last start</h2>",
        "<td>checks</td>",
        "<td>started</td>",
        &format!("href=\"{op_page}\""),
        "data-console=\"/vms/dev/console\"",
        "OK   Reached &#60;b&#62;multi-user&#60;/b&#62; &#38; more",
        "boot line 22\n",
        "action=\"/vms/dev/pause\"",
        "href=\"/vms/dev/stop\"",
        "href=\"/vms/dev/restart\"",
    ] {
        assert!(page.contains(shown), "the page lacks {shown:?}\n{page}");
    }
    assert!(!page.contains("boot line 21\n"), "only the last 40 lines");
    assert!(!page.contains("<b>"), "console markup went through");
    assert!(
        !page.contains("action=\"/vms/dev/start\""),
        "Start on a running VM"
    );
    let json = text(w.send(w.get("/vms/dev/console", Some(&b))).await).await;
    let console: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(console["state"], "running");
    assert_eq!(console["lines"].as_array().unwrap().len(), 40);
    assert_eq!(console["lines"][0], "boot line 22");

    // Stopping and restarting ask first; the question changes nothing.
    for (path, button) in [
        ("/vms/dev/stop", "Stop dev"),
        ("/vms/dev/restart", "Restart dev"),
    ] {
        let confirm = w.page(&b, path).await;
        assert!(confirm.contains(&format!("action=\"{path}\"")), "{confirm}");
        assert!(confirm.contains(button));
        assert!(confirm.contains(&b.csrf));
    }
    assert_eq!(w.vm("dev").state, VmState::Running);

    // A running VM's root cannot be reset: the page says so, and offers no Reset.
    let response = w.send(w.get("/vms/dev/reset", Some(&b))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(text(response).await.contains("root can be reset"));
    assert!(!w.page(&b, "/vms/dev").await.contains("/vms/dev/reset"));

    // Pause and resume answer at once, on the VM's page.
    assert_eq!(
        w.act(&b, "/vms/dev/pause").await,
        "/vms/dev?notice=vm-paused"
    );
    assert_eq!(w.vm("dev").state, VmState::Paused);
    let page = w.page(&b, "/vms/dev?notice=vm-paused").await;
    assert!(page.contains("VM paused."));
    assert!(page.contains("action=\"/vms/dev/resume\""));
    assert!(!page.contains("action=\"/vms/dev/pause\""));
    let again = w
        .send(w.post("/vms/dev/pause", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(
        text(again)
            .await
            .contains("only a running VM can be paused")
    );
    assert_eq!(
        w.act(&b, "/vms/dev/resume").await,
        "/vms/dev?notice=vm-resumed"
    );
    assert_eq!(w.vm("dev").state, VmState::Running);

    // Restart: a new VMM process, and the page's last start is the restart.
    let op_page = w.act(&b, "/vms/dev/restart").await;
    let op = w.finish(&op_page).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let vm = w.vm("dev");
    assert_eq!(vm.state, VmState::Running);
    let new_pid = vm.runtime.as_ref().unwrap().pid;
    assert_ne!(new_pid, FIRST_PID);
    assert!(!fc.alive(FIRST_PID) && fc.alive(new_pid));
    let page = w.page(&b, "/vms/dev").await;
    assert!(
        page.contains(&format!("href=\"{op_page}\">Restart VM")),
        "{page}"
    );

    // The restart began a new console log (the last boot's is kept beside it).
    assert!(std::fs::read_to_string(&log).unwrap_or_default().is_empty());
    let mut previous = log.clone().into_os_string();
    previous.push(".1");
    assert!(
        std::fs::read_to_string(&previous)
            .unwrap()
            .contains("boot line 60")
    );
    std::fs::write(&log, "second boot line\n").unwrap();

    // Stop: the VMM is gone, the page offers Start and keeps the console, no longer followed.
    let op_page = w.act(&b, "/vms/dev/stop").await;
    let op = w.finish(&op_page).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    assert_eq!(op.kind, OperationKind::StopVm);
    let vm = w.vm("dev");
    assert_eq!((vm.state, vm.runtime), (VmState::Stopped, None));
    assert!(!fc.alive(new_pid));
    let page = w.page(&b, "/vms/dev").await;
    assert!(page.contains("action=\"/vms/dev/start\""));
    assert!(!page.contains("<h2>Runtime</h2>"));
    assert!(page.contains("second boot line"), "{page}");
    assert!(
        !page.contains("data-console="),
        "a stopped VM's console is not polled"
    );
    for path in ["/vms/dev/stop", "/vms/dev/restart"] {
        let response = w.send(w.post(path, Some(&b), &[("csrf", &b.csrf)])).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
        assert!(text(response).await.contains("is stopped"));
        let response = w.send(w.get(path, Some(&b))).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "GET {path}");
    }

    // Reset asks first, on a stopped VM only; the question changes nothing; the answer is a
    // fresh root (a new overlay disk), on the VM's page.
    let confirm = w.page(&b, "/vms/dev/reset").await;
    assert!(confirm.contains("action=\"/vms/dev/reset\""), "{confirm}");
    assert!(
        confirm.contains("Reset dev") && confirm.contains("/root"),
        "{confirm}"
    );
    let page = w.page(&b, "/vms/dev").await;
    assert!(page.contains("href=\"/vms/dev/reset\""), "{page}");
    let overlay = w.d.paths.vm_dir(&vm.id).join(disks::OVERLAY_DISK);
    std::fs::write(w.d.paths.vm_dir(&vm.id).join("marker"), "").unwrap();
    let inode =
        |p: &std::path::Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&overlay);
    assert_eq!(
        w.act(&b, "/vms/dev/reset").await,
        "/vms/dev?notice=vm-reset"
    );
    assert_ne!(inode(&overlay), before, "a new overlay disk");
    let page = w.page(&b, "/vms/dev?notice=vm-reset").await;
    assert!(page.contains("Root reset to the image"), "{page}");
    assert_eq!(w.vm("dev").state, VmState::Stopped);

    // Start again, then a VMM that dies on its own: the page says why.
    let op = w.finish(&w.act(&b, "/vms/dev/start").await).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let pid = w.vm("dev").runtime.unwrap().pid;
    std::fs::write(&log, "[    3.101] Kernel panic - not syncing: <fatal>\n").unwrap();
    fc.crash(pid);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.vm("dev").state != VmState::Failed {
        assert!(
            std::time::Instant::now() < deadline,
            "the crash was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = w.page(&b, "/vms/dev").await;
    assert!(page.contains("<strong>Last error</strong>"), "{page}");
    assert!(page.contains("killed or crashed; last console lines:\n"));
    assert!(page.contains("Kernel panic - not syncing: &#60;fatal&#62;"));
    assert!(page.contains("action=\"/vms/dev/start\""));

    // Deleting it through its confirmation leaves nothing of it running. The daemon's next
    // spare Firecracker (started `REFILL_DELAY` after the create took the last one, which a
    // slow run reaches) may be: a process started after the VM's last one.
    assert_eq!(
        w.act(&b, "/vms/dev/delete").await,
        "/?notice=vm-deleted&name=dev"
    );
    assert!(w.vm_names().is_empty());
    let left = fc.running();
    assert!(left.iter().all(|p| *p > pid) && left.len() <= 1, "{left:?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_vm_stops_it_first() {
    let (w, fc, b) = Web::with_running_dev().await;
    let confirm = w.page(&b, "/vms/dev/delete").await;
    assert!(confirm.contains("It is stopped first."), "{confirm}");
    assert_eq!(
        w.act(&b, "/vms/dev/delete").await,
        "/?notice=vm-deleted&name=dev"
    );
    assert!(w.vm_names().is_empty());
    assert!(fc.running().is_empty(), "{:?}", fc.running());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_cannot_happen_shows_the_daemons_reason() {
    let w = Web::with_config(
        "vmm = \"firecracker\"\nfirecracker_bin = \"/nonexistent/fc\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
    )
    .await;
    let b = w.sign_in().await;
    w.insert_bootable_image("base");
    let (op_page, op) = w.create_started(&b, "dev").await;
    assert_eq!(op.state, OperationState::Failed, "{op:?}");
    let reason = op.error.unwrap().message;
    assert!(reason.contains("/nonexistent/fc"), "{reason}");

    let page = w.page(&b, &op_page).await;
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains(&reason.replace('"', "&#34;")), "{page}");
    assert!(page.contains("<a href=\"/vms/dev\">dev</a>"));
    assert!(
        page.contains("set firecracker_bin in config.toml</p>"),
        "the hint's part a browser user can follow"
    );
    // The VM was made, and is stopped with the reason; it can be started (or deleted).
    let vm = w.vm("dev");
    assert_eq!(vm.state, VmState::Stopped);
    let page = w.page(&b, "/vms/dev").await;
    assert!(page.contains("<strong>Last error</strong>"));
    assert!(page.contains("/nonexistent/fc"));
    assert!(page.contains("<h2>Last start</h2>"));
    assert!(page.contains("state-failed"));
    assert!(page.contains("action=\"/vms/dev/start\""));
    assert!(
        !page.contains("<h2>Console</h2>"),
        "nothing ran, nothing to show"
    );
    // Starting it from its page fails the same way, as an operation.
    let op = w.finish(&w.act(&b, "/vms/dev/start").await).await;
    assert_eq!(op.state, OperationState::Failed);
    assert_eq!(w.vm("dev").state, VmState::Stopped);
    w.stop().await;
}

/// What each refused request must leave as it was.
fn lifecycle_snapshot(w: &Web) -> Vec<(String, VmState, Option<u32>)> {
    let mut vms: Vec<_> =
        w.d.store
            .list_vms()
            .unwrap()
            .into_iter()
            .map(|vm| (vm.name, vm.state, vm.runtime.map(|r| r.pid)))
            .collect();
    vms.sort_by(|a, b| a.0.cmp(&b.0));
    vms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_actions_need_a_session_the_csrf_token_and_the_same_origin() {
    let (w, fc) = Web::with_fake_host().await;
    let b = w.sign_in().await;
    let other = w.sign_in().await;
    w.insert_bootable_image("base");
    for (name, start) in [("dev", true), ("held", true), ("idle", false)] {
        let response = w
            .send(w.post("/vms", Some(&b), &Web::vm_form(&b, name, start)))
            .await;
        if start {
            let op = w.finish(location(&response)).await;
            assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
        }
    }
    assert_eq!(
        w.act(&b, "/vms/held/pause").await,
        "/vms/held?notice=vm-paused"
    );
    let before = lifecycle_snapshot(&w);
    let ops_before = w.d.ops.list().len();
    let origin = format!("http://{}", w.host);

    let paths = [
        "/vms/idle/start",
        "/vms/dev/stop",
        "/vms/dev/restart",
        "/vms/dev/pause",
        "/vms/held/resume",
        "/vms/held/stop",
    ];
    for path in paths {
        // No session at all, or a forged cookie.
        let forged = Browser {
            cookie: format!("{SESSION_COOKIE}=00000000000000000000000000000000.9999999999.00"),
            csrf: b.csrf.clone(),
        };
        for browser in [None, Some(&forged)] {
            let response = w
                .send(w.post(path, browser, &[("csrf", b.csrf.as_str())]))
                .await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        // The session, without its own token.
        for csrf in [None, Some(""), Some("00ff"), Some(other.csrf.as_str())] {
            let fields: Vec<(&str, &str)> = csrf.map(|t| ("csrf", t)).into_iter().collect();
            let response = w.send(w.post(path, Some(&b), &fields)).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path} {csrf:?}");
        }
        // The right token, sent by another site.
        for (header, value) in [
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let mut req = w.post(path, Some(&b), &[("csrf", &b.csrf)]);
            req.headers_mut().insert(header, value.parse().unwrap());
            let response = w.send(req).await;
            assert_eq!(
                response.status(),
                StatusCode::FORBIDDEN,
                "{path} {header}: {value}"
            );
        }
        // And GET, the method a link or an image can make a browser send.
        let status = w
            .send(w.get(&format!("{path}?csrf={}", b.csrf), Some(&b)))
            .await
            .status();
        assert!(
            status == StatusCode::OK || status == StatusCode::METHOD_NOT_ALLOWED,
            "GET {path}: {status}"
        );
        assert_eq!(lifecycle_snapshot(&w), before, "{path} changed a VM");
        assert_eq!(
            w.d.ops.list().len(),
            ops_before,
            "{path} started an operation"
        );
    }
    assert_eq!(fc.running().len(), 2);

    // The same requests from the console's own page work.
    let mut req = w.post("/vms/dev/pause", Some(&b), &[("csrf", &b.csrf)]);
    req.headers_mut()
        .insert(header::ORIGIN, origin.parse().unwrap());
    req.headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    assert_eq!(w.send(req).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(w.vm("dev").state, VmState::Paused);
    w.stop().await;
}

// ----- guest health and ports, the sudo banner, image bootstrap -----

/// How the stand-in agent behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AgentMood {
    Answers,
    /// Accepts the connection and never says a word.
    Hangs,
}

/// A stand-in for a guest agent behind Firecracker's hybrid-vsock socket: it accepts
/// `CONNECT 1024`, checks the VM's token and answers `/v1/healthz` and `/v1/ports` with what
/// a guest running a web server (and a process named like markup) would say.
fn fake_agent(
    socket: &std::path::Path,
    token: String,
    mood: AgentMood,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let token = token.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                assert_eq!(line, "CONNECT 1024\n");
                if mood == AgentMood::Hangs {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                stream
                    .get_mut()
                    .write_all(b"OK 1073741824\n")
                    .await
                    .unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if stream.read(&mut byte).await.unwrap() == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = if !head
                    .contains(&format!("authorization: bearer {}", token.to_lowercase()))
                {
                    None
                } else if path == "/v1/healthz" {
                    Some(serde_json::json!({
                        "ready": true,
                        "version": env!("CARGO_PKG_VERSION"),
                        "hostname": "dev",
                        "uptime_ms": 5_250,
                        "boot": [{"name": "init", "at_ms": 1_200}, {"name": "agent", "at_ms": 2_400}],
                        "listeners": ["vsock:1024"],
                    }))
                } else if path == "/v1/ports" {
                    Some(serde_json::json!([
                        {"protocol": "tcp", "address": "0.0.0.0", "port": 8080, "inode": 1,
                         "pid": 300, "process": "<script>alert(1)</script>"},
                        {"protocol": "tcp", "address": "127.0.0.1", "port": 5432, "inode": 2,
                         "pid": 301, "process": "postgres"},
                    ]))
                } else {
                    None
                };
                let (status, body) = match body {
                    Some(json) => ("200 OK", json.to_string()),
                    None => ("401 Unauthorized", r#"{"message":"no"}"#.to_owned()),
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.get_mut().write_all(answer.as_bytes()).await;
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_vms_page_shows_its_guests_health_and_ports() {
    let (w, _fc, b) = Web::with_running_dev().await;
    let vm = w.vm("dev");
    let socket = PathBuf::from(vm.runtime.clone().unwrap().vsock_socket.unwrap());
    let token = std::fs::read_to_string(w.d.paths.vm_dir(&vm.id).join(disks::AGENT_TOKEN))
        .unwrap()
        .trim()
        .to_owned();

    // Nothing answers on the VM's vsock socket yet: the page says so, and still shows.
    let page = w.page(&b, "/vms/dev").await;
    assert!(
        page.contains("<strong>Agent not answering.</strong>"),
        "{page}"
    );
    assert!(page.contains("<h2>Runtime</h2>"));

    // An agent that answers: its health and ports, the reachable one as a link, the
    // process name as text.
    let agent = fake_agent(&socket, token.clone(), AgentMood::Answers);
    let page = w.page(&b, "/vms/dev").await;
    for shown in [
        "<span class=\"state state-running\">ready</span>",
        "<dd><code>dev</code></dd>",
        "<dt>Up for</dt><dd>5.2s</dd>",
        "<tr><td>agent</td><td class=\"num\">2.4s</td></tr>",
        &format!(
            "<a href=\"http://{}:8080/\" target=\"_blank\" rel=\"noopener noreferrer\">",
            vm.network.ip
        ),
        "&#60;script&#62;alert(1)&#60;/script&#62; (pid 300)",
        "loopback only: not reachable from the host",
    ] {
        assert!(page.contains(shown), "{shown} not in\n{page}");
    }
    assert!(
        !page.contains("<script>alert"),
        "a guest's process name ran as markup"
    );
    assert!(!page.contains("bangerd is"), "same version: no note");
    // The section alone, for the page's script.
    let section = w.page(&b, "/vms/dev/guest").await;
    assert!(
        section.starts_with("<section class=\"panel guest\" id=\"guest\""),
        "{section}"
    );
    assert!(section.contains("&#60;script&#62;"));
    agent.abort();

    // An agent that accepts and never answers holds the page no longer than the deadline.
    let hung = fake_agent(&socket, token, AgentMood::Hangs);
    let asked = std::time::Instant::now();
    let page = w.page(&b, "/vms/dev").await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert!(page.contains("it did not answer within 1.0s"), "{page}");
    hung.abort();

    // A stopped VM has no guest to ask.
    let op = w.act(&b, "/vms/dev/stop").await;
    assert_eq!(w.finish(&op).await.state, OperationState::Succeeded);
    assert!(!w.page(&b, "/vms/dev").await.contains("id=\"guest\""));
    let response = w.send(w.get("/vms/dev/guest", Some(&b))).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    w.stop().await;
}

fn sudo_check(status: banger_host::doctor::CheckStatus) -> banger_host::doctor::Check {
    banger_host::doctor::Check {
        name: "sudo".into(),
        status,
        detail: "banger is not running as root and `sudo -n` refuses ip, nft".into(),
        fix: Some("echo rule | sudo tee /etc/sudoers.d/banger".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_carries_the_sudo_banner_while_sudo_is_not_ready() {
    use super::privilege::Privileges;
    use banger_host::doctor::CheckStatus;
    let (w, b) = Web::with_stopped_dev().await;
    let pages = [
        "/",
        "/vms",
        "/vms/dev",
        "/images",
        "/new/vm",
        "/operations",
        "/no-such-page",
    ];
    let answer = |sudo| {
        move |_: &Daemon| Privileges {
            sudo: Some(sudo_check(sudo)),
            bootstrap: None,
        }
    };
    w.d.web
        .privileges
        .set_probe(Arc::new(answer(CheckStatus::Fail)));
    for path in pages {
        let page = text(w.send(w.get(path, Some(&b))).await).await;
        assert!(
            page.contains("<div class=\"banner\" role=\"alert\" id=\"sudo-banner\">"),
            "{path}"
        );
        assert!(page.contains("refuses ip, nft"), "{path}");
        assert!(
            page.contains(
                "<pre class=\"fix\"><code>echo rule | sudo tee /etc/sudoers.d/banger</code></pre>"
            ),
            "{path}: {page}"
        );
    }
    // Fixed (or bangerd is root): no banner anywhere.
    w.d.web
        .privileges
        .set_probe(Arc::new(answer(CheckStatus::Ok)));
    for path in pages {
        let page = text(w.send(w.get(path, Some(&b))).await).await;
        assert!(!page.contains("sudo-banner"), "{path}");
    }
    w.d.web
        .privileges
        .set_probe(Arc::new(|_: &Daemon| Privileges::default()));
    assert!(!w.page(&b, "/").await.contains("sudo-banner"));

    // The pages' scripts poll every second or two; they never run the check.
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = probes.clone();
    w.d.web.privileges.set_probe(Arc::new(move |_: &Daemon| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Privileges::default()
    }));
    let id = slow_operation(&w).id;
    for path in [
        format!("/operations/{id}/json"),
        "/vms/dev/console".to_owned(),
    ] {
        let mut req = w.get(&path, Some(&b));
        req.headers_mut()
            .insert("sec-fetch-dest", "empty".parse().unwrap());
        assert_eq!(w.send(req).await.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(probes.load(std::sync::atomic::Ordering::SeqCst), 0);
    w.page(&b, "/").await;
    assert_eq!(
        probes.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a page load checks"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_comes_from_the_doctors_sudo_check() {
    // Root: the doctor has nothing to check, so nothing to say.
    let (root, _fc) = Web::with_fake_host().await;
    let b = root.sign_in().await;
    assert_eq!(super::privilege::Privileges::probe(&root.d).sudo, None);
    assert!(!root.page(&b, "/").await.contains("sudo-banner"));
    root.stop().await;

    // Not root, and sudo wants a password: the doctor's finding and fix, on the page.
    let refusing = FakeRunner::new().respond(
        "sudo",
        CommandOutput {
            code: Some(1),
            stdout: Vec::new(),
            stderr: b"sudo: a password is required\n".to_vec(),
        },
    );
    let (w, _fc) = Web::with_fake_host_as(Privilege::Sudo, refusing).await;
    let b = w.sign_in().await;
    let found = super::privilege::Privileges::probe(&w.d);
    let check = found.sudo.clone().expect("a sudo check when not root");
    assert!(check.is_fail(), "{check:?}");
    let page = w.page(&b, "/").await;
    assert!(page.contains("id=\"sudo-banner\""), "{page}");
    // Whether sudo is installed on this host or not, the fix names banger's sudoers file.
    assert!(check.fix.unwrap().contains("/etc/sudoers.d/banger"));
    assert!(page.contains("/etc/sudoers.d/banger"), "{page}");
    assert!(page.contains("banger is not running as root"), "{page}");
    w.stop().await;
}

/// A stand-in for the image service's bootstrap: the same operation kind, stages and target,
/// running until it is cancelled, building nothing.
fn pretend_bootstrap(
    d: &Arc<Daemon>,
    req: &banger_api::BootstrapImageRequest,
) -> Result<banger_api::Operation, banger_api::ApiError> {
    let name = req.name.clone().unwrap();
    Ok(d.ops.spawn(
        OperationKind::BootstrapImage,
        &name,
        &["debootstrap", "kernel", "record"],
        |cx| {
            cx.begin("debootstrap");
            cx.progress("debootstrap", 3 << 20, 10 << 20, "bytes");
            for _ in 0..3000 {
                cx.check_cancelled()?;
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(serde_json::Value::Null)
        },
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_form_checks_its_fields_then_starts_an_operation_that_can_be_cancelled() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    w.insert_image("base");
    let page = w.page(&b, "/images").await;
    assert!(
        page.contains("<form method=\"post\" action=\"/images/bootstrap\""),
        "{page}"
    );
    assert!(page.contains("id=\"name\" name=\"name\" type=\"text\" value=\"debian\""));
    assert!(page.contains("id=\"suite\" name=\"suite\" type=\"text\" value=\"bookworm\""));

    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = started.clone();
    w.d.web.set_bootstrap(Arc::new(move |d, req| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pretend_bootstrap(d, req)
    }));
    let post = |name: &str, suite: &str| {
        w.post(
            "/images/bootstrap",
            Some(&b),
            &[("csrf", &b.csrf), ("name", name), ("suite", suite)],
        )
    };
    // Mistakes come back inline, with what was typed, and start nothing.
    for (name, suite, field, says) in [
        ("Debian!", "bookworm", "name", "lower-case"),
        ("base", "bookworm", "name", "already exists"),
        ("fresh", "Bookworm", "suite", "not a Debian suite name"),
        ("fresh", "", "suite", "not a Debian suite name"),
    ] {
        let response = w.send(post(name, suite)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name} {suite}");
        let page = text(response).await;
        let error = page
            .split(&format!("id=\"{field}-error\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {field} error for {name:?} {suite:?}:\n{page}"));
        assert!(
            error.split("</p>").next().unwrap().contains(says),
            "{error}"
        );
        assert!(page.contains(&format!("value=\"{name}\"")), "{page}");
    }
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(w.d.ops.list().is_empty());

    // The host's refusal (the service's checks) shows inline with its fix.
    w.d.web.set_bootstrap(Arc::new(|_, _| {
        Err(banger_api::ApiError::new(
            ErrorCode::Unavailable,
            "debootstrap is not installed: `banger image bootstrap debian` cannot build images",
        )
        .with_hint("sudo apt-get install debootstrap"))
    }));
    let response = w.send(post("fresh", "trixie")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = text(response).await;
    assert!(page.contains("debootstrap is not installed"), "{page}");
    assert!(
        page.contains("<p class=\"hint\">sudo apt-get install debootstrap</p>"),
        "{page}"
    );
    assert!(page.contains("value=\"trixie\""));

    // A good form starts the bootstrap and shows its operation, which polls and can cancel.
    let count = started.clone();
    w.d.web.set_bootstrap(Arc::new(move |d, req| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(req.distro, "debian");
        assert_eq!(req.suite.as_deref(), Some("trixie"));
        pretend_bootstrap(d, req)
    }));
    let response = w.send(post("fresh", "trixie")).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op_page = location(&response).to_owned();
    assert!(op_page.starts_with("/operations/op-"), "{op_page}");
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
    let page = w.page(&b, &op_page).await;
    assert!(page.contains("Bootstrap image fresh"), "{page}");
    assert!(
        page.contains(&format!("data-op=\"{op_page}/json\"")),
        "{page}"
    );
    assert!(
        page.contains(&format!("action=\"{op_page}/cancel\"")),
        "{page}"
    );
    assert!(page.contains(">Cancel</button>"));
    // The operation reports its progress from its own thread, a moment after it starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let json = loop {
        let json: serde_json::Value =
            serde_json::from_str(&w.page(&b, &format!("{op_page}/json")).await).unwrap();
        // Its stage begins, then reports progress: wait for the progress.
        if json["current"] == "debootstrap: 3M of 10M" || std::time::Instant::now() >= deadline {
            break json;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(json["running"], true);
    assert_eq!(json["current"], "debootstrap: 3M of 10M");
    // Cancel, from the page's button.
    let after = w.act(&b, &format!("{op_page}/cancel")).await;
    assert_eq!(after, format!("{op_page}?notice=cancel-requested"));
    let op = w.finish(&op_page).await;
    assert_eq!(op.state, OperationState::Cancelled);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_post_needs_a_session_the_csrf_token_and_the_same_origin() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let other = w.sign_in().await;
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = started.clone();
    w.d.web.set_bootstrap(Arc::new(move |d, req| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        pretend_bootstrap(d, req)
    }));
    let fields = |csrf: Option<&str>| -> Vec<(String, String)> {
        let mut f = vec![
            ("name".to_owned(), "fresh".to_owned()),
            ("suite".to_owned(), "bookworm".to_owned()),
        ];
        if let Some(token) = csrf {
            f.push(("csrf".to_owned(), token.to_owned()));
        }
        f
    };
    let post = |browser: Option<&Browser>, csrf: Option<&str>| {
        let f = fields(csrf);
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        w.post("/images/bootstrap", browser, &refs)
    };
    let forged = Browser {
        cookie: format!("{SESSION_COOKIE}=00000000000000000000000000000000.9999999999.00"),
        csrf: b.csrf.clone(),
    };
    for browser in [None, Some(&forged)] {
        let response = w.send(post(browser, Some(&b.csrf))).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for csrf in [None, Some(""), Some("00ff"), Some(other.csrf.as_str())] {
        let response = w.send(post(Some(&b), csrf)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{csrf:?}");
    }
    for (header, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let mut req = post(Some(&b), Some(&b.csrf));
        req.headers_mut().insert(header, value.parse().unwrap());
        assert_eq!(
            w.send(req).await.status(),
            StatusCode::FORBIDDEN,
            "{header}: {value}"
        );
    }
    // GET, which links and images can make a browser send, is the page of an image named
    // "bootstrap".
    let status = w
        .send(w.get(
            &format!(
                "/images/bootstrap?name=fresh&suite=bookworm&csrf={}",
                b.csrf
            ),
            Some(&b),
        ))
        .await
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        w.d.ops.list().is_empty(),
        "a refused request started an operation"
    );

    // From the console's own page it works.
    let mut req = post(Some(&b), Some(&b.csrf));
    req.headers_mut().insert(
        header::ORIGIN,
        format!("http://{}", w.host).parse().unwrap(),
    );
    req.headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    assert_eq!(w.send(req).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
    w.stop().await;
}

// ----- image build and promote -----

/// A stand-in for an image service's operation (`kind`, named for the new image): it runs
/// until it is cancelled, making nothing.
fn pretend_image_op(
    d: &Arc<Daemon>,
    kind: OperationKind,
    name: &str,
) -> Result<banger_api::Operation, banger_api::ApiError> {
    Ok(d.ops.spawn(kind, name, &["boot", "record"], |cx| {
        cx.begin("boot");
        for _ in 0..3000 {
            cx.check_cancelled()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(serde_json::Value::Null)
    }))
}

/// The text of the inline error under `field` in `page`.
fn field_error<'a>(page: &'a str, field: &str) -> &'a str {
    page.split(&format!("id=\"{field}-error\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {field} error:\n{page}"))
        .split("</p>")
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_form_checks_its_recipe_then_starts_a_build_that_can_be_cancelled() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    w.insert_image("base");
    let images = w.page(&b, "/images").await;
    assert!(images.contains("href=\"/new/build\""), "{images}");
    let form = w.page(&b, "/new/build").await;
    assert!(
        form.contains("<form method=\"post\" action=\"/new/build\""),
        "{form}"
    );
    assert!(form.contains("<textarea id=\"recipe\" name=\"recipe\""));
    assert!(form.contains("# An image build recipe"), "{form}");
    assert!(form.contains("<option value=\"opencode\">opencode</option>"));
    assert!(form.contains("name=\"no_cache\" value=\"on\">"));

    let post = |fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", b.csrf.as_str())];
        all.extend_from_slice(fields);
        w.post("/new/build", Some(&b), &all)
    };
    let refused = async |fields: &[(&str, &str)]| {
        let response = w.send(post(fields)).await;
        let status = response.status();
        let page = text(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
        page
    };

    // The real build service checks the host's files: one that is missing is named.
    let page = refused(&[
        (
            "recipe",
            "name = \"tools\"\n[[file]]\nsrc = \"/nonexistent/motd\"\ndest = \"/etc/motd\"\n",
        ),
        ("base", "base"),
    ])
    .await;
    assert!(
        page.contains("file /nonexistent/motd cannot be read"),
        "{page}"
    );
    assert!(w.d.ops.list().is_empty());

    let started = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = started.clone();
    w.d.web.set_build(Arc::new(move |d, req| {
        seen.lock().unwrap().push(req.clone());
        let name = req.recipe.name.clone().unwrap();
        pretend_image_op(d, OperationKind::BuildImage, &name)
    }));

    // A recipe that is not TOML, or has a key recipes do not have.
    let page = refused(&[("recipe", "pakages = [\"git\"]\n"), ("name", "tools")]).await;
    assert!(
        field_error(&page, "recipe").contains("unknown field `pakages`"),
        "{page}"
    );
    // What was typed comes back as typed.
    assert!(page.contains("pakages = [&#34;git&#34;]"), "{page}");
    // Relative host paths have nothing to be relative to: every one is named.
    let page = refused(&[(
        "recipe",
        "name = \"tools\"\n[[file]]\nsrc = \"motd\"\ndest = \"/etc/motd\"\n\
         [[run]]\nscript = \"setup.sh\"\n",
    )])
    .await;
    let error = field_error(&page, "recipe");
    assert!(
        error.contains("the web form takes absolute host paths only"),
        "{error}"
    );
    assert!(error.contains("file src"), "{error}");
    assert!(error.contains("run script"), "{error}");
    assert!(
        error.contains("[[run]] command and [[download]]"),
        "{error}"
    );
    // Every mistake at once, each under its field.
    let page = refused(&[
        ("recipe", "packages = [\"Git\"]\n"),
        ("name", "base"),
        ("base", "nope"),
    ])
    .await;
    assert!(
        field_error(&page, "recipe").contains("not a Debian package name"),
        "{page}"
    );
    assert!(field_error(&page, "name").contains("already exists"));
    assert!(field_error(&page, "base").contains("unknown base image &#34;nope&#34;"));
    // No name anywhere; no base anywhere (the configured default does not exist here); an
    // unknown built-in.
    let page = refused(&[("recipe", "base = \"base\"\n")]).await;
    assert!(field_error(&page, "name").contains("the recipe names no image"));
    let page = refused(&[("recipe", "name = \"tools\"\n")]).await;
    assert!(
        field_error(&page, "base")
            .contains("unknown base image &#34;debian&#34; (the configured default image)"),
        "{page}"
    );
    let page = refused(&[("builtin", "nope"), ("name", "x"), ("base", "base")]).await;
    assert!(field_error(&page, "builtin").contains("no built-in recipe &#34;nope&#34;"));
    assert!(page.contains("built-in recipes: opencode"), "{page}");
    assert!(started.lock().unwrap().is_empty());
    assert!(
        w.d.ops.list().is_empty(),
        "a refused form started something"
    );

    // A good recipe starts the build, with the overrides, and shows its operation.
    let response = w
        .send(post(&[
            ("recipe", super::forms::EXAMPLE_RECIPE),
            ("name", "tools2"),
            ("base", "base"),
            ("no_cache", "on"),
        ]))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op_page = location(&response).to_owned();
    assert!(op_page.starts_with("/operations/op-"), "{op_page}");
    {
        let started = started.lock().unwrap();
        let req = &started[0];
        assert_eq!(req.recipe.name.as_deref(), Some("tools2"));
        assert_eq!(req.recipe.base.as_deref(), Some("base"));
        assert_eq!(req.recipe.packages, ["jq"]);
        assert_eq!(req.no_cache, Some(true));
        assert_eq!(req.download_only, None);
    }
    let page = w.page(&b, &op_page).await;
    assert!(page.contains("Build image tools2"), "{page}");
    assert!(page.contains(&format!("action=\"{op_page}/cancel\"")));
    let after = w.act(&b, &format!("{op_page}/cancel")).await;
    assert_eq!(after, format!("{op_page}?notice=cancel-requested"));
    assert_eq!(w.finish(&op_page).await.state, OperationState::Cancelled);

    // A built-in recipe, renamed; the typed recipe is ignored.
    let response = w
        .send(post(&[
            ("builtin", "opencode"),
            ("recipe", "this is not read"),
            ("name", "agent"),
            ("base", "base"),
        ]))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op_page = location(&response).to_owned();
    {
        let started = started.lock().unwrap();
        let req = &started[1];
        assert_eq!(req.recipe.name.as_deref(), Some("agent"));
        assert_eq!(req.recipe.services[0].name, "opencode");
        assert_eq!(req.no_cache, None);
    }
    w.act(&b, &format!("{op_page}/cancel")).await;
    assert_eq!(w.finish(&op_page).await.state, OperationState::Cancelled);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vms_page_promotes_it_and_a_running_one_is_refused() {
    let (w, _fc, b) = Web::with_running_dev().await;
    assert_eq!(w.vm("dev").state, VmState::Running);

    // A running VM's page offers no promotion, and the promote service refuses one.
    let page = w.page(&b, "/vms/dev").await;
    assert!(!page.contains("id=\"promote-form\""), "{page}");
    let promote = |name: &str, with_work: bool| {
        let mut fields = vec![("csrf", b.csrf.as_str()), ("name", name)];
        if with_work {
            fields.push(("with_work", "on"));
        }
        w.post("/vms/dev/promote", Some(&b), &fields)
    };
    let ops_before = w.d.ops.list().len();
    let response = w.send(promote("snap", false)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = text(response).await;
    assert!(
        page.contains(
            "<p>VM &#34;dev&#34; is running; only a stopped VM&#39;s root can become an image</p>"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "<p class=\"hint\">stop it first: its root is consistent only when the guest has \
             shut down</p>"
        ),
        "{page}"
    );
    assert!(
        page.contains("id=\"promote-form\""),
        "the form comes back: {page}"
    );
    assert_eq!(
        w.d.ops.list().len(),
        ops_before,
        "a refusal started something"
    );
    assert!(w.d.store.find_image("snap").unwrap().is_none());

    // Stopped, its page has the form.
    let op_page = w.act(&b, "/vms/dev/stop").await;
    assert_eq!(w.finish(&op_page).await.state, OperationState::Succeeded);
    let page = w.page(&b, "/vms/dev").await;
    assert!(
        page.contains("<form method=\"post\" action=\"/vms/dev/promote\""),
        "{page}"
    );
    assert!(page.contains("name=\"with_work\" value=\"on\">"), "{page}");
    let started = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = started.clone();
    w.d.web.set_promote(Arc::new(move |d, req| {
        seen.lock().unwrap().push(req.clone());
        pretend_image_op(d, OperationKind::PromoteImage, &req.name)
    }));
    // A bad or taken name, under its field.
    for (name, says) in [
        ("Snap!", "lower-case"),
        ("base", "already exists"),
        ("", "name"),
    ] {
        let response = w.send(promote(name, true)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let page = text(response).await;
        assert!(field_error(&page, "name").contains(says), "{name}: {page}");
        assert!(page.contains("name=\"with_work\" value=\"on\" checked>"));
    }
    assert!(started.lock().unwrap().is_empty());
    // A good one starts the promotion and shows it.
    let response = w.send(promote("snap", true)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op_page = location(&response).to_owned();
    assert_eq!(
        *started.lock().unwrap(),
        [banger_api::PromoteImageRequest {
            vm: "dev".into(),
            name: "snap".into(),
            with_work: Some(true),
            replace: None,
        }]
    );
    let page = w.page(&b, &op_page).await;
    assert!(page.contains("Promote VM to image snap"), "{page}");
    w.act(&b, &format!("{op_page}/cancel")).await;
    assert_eq!(w.finish(&op_page).await.state, OperationState::Cancelled);
    // A taken name is refused with the way out the form has; ticked, it is the image to
    // replace.
    let page = w.page(&b, "/vms/dev").await;
    assert!(page.contains("name=\"replace\" value=\"on\">"), "{page}");
    let response = w.send(promote("base", false)).await;
    let page = text(response).await;
    assert!(
        page.contains("tick \u{201c}Replace an image of this name\u{201d}"),
        "{page}"
    );
    let fields = [
        ("csrf", b.csrf.as_str()),
        ("name", "base"),
        ("replace", "on"),
    ];
    let response = w.send(w.post("/vms/dev/promote", Some(&b), &fields)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        started.lock().unwrap().last(),
        Some(&banger_api::PromoteImageRequest {
            vm: "dev".into(),
            name: "base".into(),
            with_work: None,
            replace: Some(true),
        })
    );
    let op_page = location(&response).to_owned();
    w.act(&b, &format!("{op_page}/cancel")).await;
    assert_eq!(w.finish(&op_page).await.state, OperationState::Cancelled);
    w.stop().await;
}

// ----- snapshots of pages rendered from a live daemon -----

/// Replaces what differs between runs: the temporary directory, ports, tokens, ids, times.
fn stable(w: &Web, b: &Browser, text: &str) -> String {
    let root = w.dir.path().to_str().unwrap();
    text.replace(&b.csrf, "[csrf]")
        .replace(root, "[tmp]")
        .replace(&super::views::encode(root), "[tmp-encoded]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picker_page_snapshot() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let (kernel, _, _) = w.boot_files();
    std::fs::create_dir(kernel.parent().unwrap().join("more")).unwrap();
    let dir = kernel.parent().unwrap().to_str().unwrap().to_owned();
    let path = super::views::with_query(
        "/picker",
        &[("field", "rootfs"), ("dir", &dir), ("name", "base")],
    );
    let page = text(w.send(w.get(&path, Some(&b))).await).await;
    insta::with_settings!({filters => vec![
        // Crumbs above the temporary directory depend on $TMPDIR.
        (r#"(?m)^  <a href="/picker\?[^"]*dir=%2F[^"]*">[^<]*</a>\n"#, ""),
        (r"\.tmp[A-Za-z0-9]{6}", "[tmpname]"),
        (r"%2Etmp[A-Za-z0-9]{6}", "[tmpname]"),
    ]}, {
        insta::assert_snapshot!(stable(&w, &b, &page));
    });
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_dashboard_snapshot() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let page = text(w.send(w.get("/", Some(&b))).await).await;
    // Capacity figures are this host's: the bars' values and figures vary.
    insta::with_settings!({filters => vec![
        (r#"<p class="figure">[^<]*</p>"#, r#"<p class="figure">[figure]</p>"#),
        (r#"value="\d+""#, r#"value="[n]""#),
        (r">\d+%<", ">[n]%<"),
        (r#"<p class="note">[^<]*</p>"#, r#"<p class="note">[note]</p>"#),
    ]}, {
        insta::assert_snapshot!(stable(&w, &b, &page));
    });
    w.stop().await;
}

/// Admission control in the browser: the dashboard shows reservations against the limits, and
/// a create that does not fit is refused on its form with the figures and the advice a browser
/// user can follow, nothing made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_beyond_the_limits_is_refused_on_its_form() {
    // 2 CPUs and 4 GiB: 8 vCPUs and 3072 MiB by default.
    let host = crate::host::HostFacts {
        cpus: 2,
        memory_bytes: 4 << 30,
    };
    let (w, _fc) = Web::with_fake_host_on(Privilege::Root, FakeRunner::new(), Some(host)).await;
    let b = w.sign_in().await;
    w.insert_bootable_image("base");
    let mut fields = Web::vm_form(&b, "a", true);
    fields.retain(|(k, _)| *k != "memory_mib");
    fields.push(("memory_mib", "2048"));
    let response = w.send(w.post("/vms", Some(&b), &fields)).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let op = w.finish(location(&response)).await;
    assert_eq!(op.state, OperationState::Succeeded, "{op:?}");
    let dashboard = w.page(&b, "/").await;
    for shown in [
        "1 of 2 vCPUs reserved (limit 8)",
        "2G of 4G reserved (limit 3G)",
        "a start beyond the limit is refused",
    ] {
        assert!(dashboard.contains(shown), "no {shown:?}\n{dashboard}");
    }

    let mut fields = Web::vm_form(&b, "b", true);
    fields.retain(|(k, _)| *k != "memory_mib");
    fields.push(("memory_mib", "2048"));
    let response = w.send(w.post("/vms", Some(&b), &fields)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = text(response).await;
    assert!(
        body.contains(
            "not enough room to create and start VM &#34;b&#34;: it needs 2048 MiB of guest \
             memory, 1 VM up holds 2048 MiB, and the limit is 3072 MiB"
        ),
        "{body}"
    );
    assert!(
        body.contains("stop a VM to make room; or raise the limits"),
        "{body}"
    );
    assert!(!body.contains("--memory"), "CLI advice stays out: {body}");
    assert!(w.d.store.find_vm("b").unwrap().is_none());
    w.stop().await;
}

/// A snapshot record with its directory, as `vm snapshot` leaves them, written by a Firecracker
/// no host runs (so a restore of it is refused).
fn insert_snapshot(w: &Web, name: &str, image: &Image) -> banger_api::Snapshot {
    let base = fixtures::snapshot(name, image);
    let snapshot = banger_api::Snapshot {
        id: "00000000000000aa".into(),
        vm: banger_api::SnapshotOrigin {
            id: "00000000000000bb".into(),
            ..base.vm
        },
        firecracker_version: "0.0.1".into(),
        cpu: "a test CPU".into(),
        created_at: Timestamp::from_millis(1_796_524_445_000),
        ..base
    };
    w.d.store.insert_snapshot(&snapshot).unwrap();
    std::fs::create_dir_all(w.d.paths.snapshot_dir(&snapshot.id)).unwrap();
    snapshot
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_page_snapshot() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let image = w.insert_image("base");
    insert_snapshot(&w, "ready", &image);
    let page = text(w.send(w.get("/snapshots", Some(&b))).await).await;
    insta::assert_snapshot!(stable(&w, &b, &page));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_deleted_through_a_confirmation_and_a_refused_restore_says_why() {
    let w = Web::start().await;
    let b = w.sign_in().await;
    let image = w.insert_image("base");
    let snapshot = insert_snapshot(&w, "ready", &image);
    let empty = Web::start().await;
    let eb = empty.sign_in().await;
    let page = text(empty.send(empty.get("/snapshots", Some(&eb))).await).await;
    assert!(page.contains("No snapshots yet"), "{page}");
    empty.stop().await;

    // Create a VM from it: this host's Firecracker did not write it, so the refusal is shown
    // on the list and nothing is made.
    let response = w
        .send(w.post(
            "/snapshots/ready/restore",
            Some(&b),
            &[("csrf", &b.csrf), ("name", "restored")],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let page = text(response).await;
    assert!(page.contains("error-box"), "{page}");
    assert!(page.contains("ready"), "{page}");
    assert!(w.vm_names().is_empty());
    // Without the CSRF token, nothing is tried.
    let response = w
        .send(w.post("/snapshots/ready/delete", Some(&b), &[]))
        .await;
    assert_ne!(response.status(), StatusCode::SEE_OTHER);
    assert!(w.d.store.find_snapshot("ready").unwrap().is_some());

    let confirm = text(w.send(w.get("/snapshots/ready/delete", Some(&b))).await).await;
    assert!(
        confirm.contains("action=\"/snapshots/ready/delete\""),
        "{confirm}"
    );
    assert!(confirm.contains(&b.csrf));
    assert!(
        w.d.store.find_snapshot("ready").unwrap().is_some(),
        "a GET deletes nothing"
    );
    let response = w
        .send(w.post("/snapshots/ready/delete", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response),
        "/snapshots?notice=snapshot-deleted&name=ready"
    );
    assert!(w.d.store.find_snapshot("ready").unwrap().is_none());
    assert!(!w.d.paths.snapshot_dir(&snapshot.id).exists());
    let page = text(w.send(w.get(location(&response), Some(&b))).await).await;
    assert!(page.contains("Deleted snapshot ready."), "{page}");
    // Deleting again says what is wrong, in a page.
    let response = w
        .send(w.post("/snapshots/ready/delete", Some(&b), &[("csrf", &b.csrf)]))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(text(response).await.contains("no snapshot named"));
    w.stop().await;
}
