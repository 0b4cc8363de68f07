//! The localhost web console: server-rendered pages (askama templates under `templates/`)
//! to look at and manage VMs, images and operations from a browser, served by bangerd on a
//! TCP listener next to its Unix socket.
//!
//! Loopback is reachable by every local user, unlike the 0600 socket, so the console is
//! treated as an admin interface: every page needs a session that only the socket's owner
//! can start ([`auth`]), every request is checked before a handler runs ([`guard`]), every
//! change is a POST form carrying a CSRF token ([`forms`]), and GETs change nothing (the
//! one exception, `/login`, only spends a login token). Handlers ([`pages`]) call the same
//! services as the REST API (`crate::vm`, `crate::image`, the store, the operations), never
//! the API itself. The console failing to start (port in use, unreadable secret) never stops
//! the daemon: it is reported in `GET /v1/daemon` instead.
//!
//! The VM page drives the VM lifecycle (`crate::machine`): start, stop, restart, pause and
//! resume, stop and restart behind a confirmation page like delete; long ones answer with
//! their operation's page, which polls and can cancel. A running VM's page also asks its
//! guest agent for health and listening ports, within a short deadline ([`pages::GUEST_DEADLINE`])
//! so an agent that does not answer never holds the page. A stopped VM's page promotes it to
//! an image. The images page starts image bootstraps, and links to the build form
//! (`/new/build`), which builds an image from a recipe typed in the browser or built into
//! banger. Every page carries a banner while banger's privileged steps cannot run
//! ([`privilege`]).

pub mod auth;
pub mod forms;
pub mod guard;
pub mod pages;
pub mod picker;
pub mod privilege;
pub mod views;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use banger_api::paths::Paths;
use banger_api::{
    ApiError, BootstrapImageRequest, BuildImageRequest, ErrorCode, Operation, PromoteImageRequest,
    Timestamp, WebConsoleInfo, WebLogin,
};
use tokio::net::TcpListener;

use crate::Daemon;
use crate::config::WebConfig;
use auth::{Auth, LOGIN_TTL, SecretError};
use guard::AllowedHosts;

/// Largest form body accepted; every console form is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Why the console is not serving.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("disabled by `web.enabled = false` in {}", config.display())]
    Disabled { config: PathBuf },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a serving console needs at every request.
#[derive(Debug)]
pub struct Serving {
    pub auth: Auth,
    pub hosts: AllowedHosts,
    /// `http://ADDR:PORT/`, with the port actually bound.
    pub url: String,
}

/// How the console starts an image bootstrap once its form is valid: the image service's
/// host checks and operation ([`image_bootstrap`]). Replaceable so that tests of the form
/// never build an image for real.
pub type StartBootstrap =
    Arc<dyn Fn(&Arc<Daemon>, &BootstrapImageRequest) -> Result<Operation, ApiError> + Send + Sync>;

/// The image service's bootstrap: the host checks (debootstrap, disk, `sudo -n`), then the
/// operation. Blocking.
pub fn image_bootstrap(
    d: &Arc<Daemon>,
    req: &BootstrapImageRequest,
) -> Result<Operation, ApiError> {
    let checked = crate::image::check_bootstrap(d, req)?;
    Ok(crate::image::start_bootstrap(d.clone(), checked))
}

/// How the console starts an image build once its form is valid: the build service's checks
/// (the host's files, apt for the base image) and operation ([`image_build`]). Replaceable so
/// that tests of the form never build an image for real.
pub type StartBuild =
    Arc<dyn Fn(&Arc<Daemon>, &BuildImageRequest) -> Result<Operation, ApiError> + Send + Sync>;

/// The build service: [`crate::build::check`], then the operation. Blocking.
pub fn image_build(d: &Arc<Daemon>, req: &BuildImageRequest) -> Result<Operation, ApiError> {
    let checked = crate::build::check(d, req)?;
    Ok(crate::build::start(d.clone(), checked))
}

/// How the console starts a promotion once its form is valid ([`image_promote`]); replaceable
/// like [`StartBuild`].
pub type StartPromote =
    Arc<dyn Fn(&Arc<Daemon>, &PromoteImageRequest) -> Result<Operation, ApiError> + Send + Sync>;

/// The promote service: [`crate::promote::check`] (a new name, a stopped VM), then the
/// operation. Blocking.
pub fn image_promote(d: &Arc<Daemon>, req: &PromoteImageRequest) -> Result<Operation, ApiError> {
    let checked = crate::promote::check(d, req)?;
    Ok(crate::promote::start(d.clone(), checked))
}

/// The console's part of the daemon's state: serving, or the reason it is not.
pub struct Console {
    serving: Result<Serving, WebError>,
    /// Whether `sudo -n` runs the privileged steps, for the banner.
    pub privileges: privilege::PrivilegeStatus,
    bootstrap: std::sync::Mutex<StartBootstrap>,
    build: std::sync::Mutex<StartBuild>,
    promote: std::sync::Mutex<StartPromote>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("serving", &self.serving)
            .field("privileges", &self.privileges)
            .finish_non_exhaustive()
    }
}

impl Console {
    fn new(serving: Result<Serving, WebError>) -> Console {
        Console {
            serving,
            privileges: privilege::PrivilegeStatus::default(),
            bootstrap: std::sync::Mutex::new(Arc::new(image_bootstrap)),
            build: std::sync::Mutex::new(Arc::new(image_build)),
            promote: std::sync::Mutex::new(Arc::new(image_promote)),
        }
    }

    /// How the bootstrap form starts a bootstrap.
    pub fn bootstrap(&self) -> StartBootstrap {
        self.bootstrap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces [`Self::bootstrap`] (tests: an operation that builds nothing).
    pub fn set_bootstrap(&self, start: StartBootstrap) {
        *self.bootstrap.lock().unwrap_or_else(|e| e.into_inner()) = start;
    }

    /// How the build form starts a build.
    pub fn build(&self) -> StartBuild {
        self.build.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces [`Self::build`] (tests: an operation that builds nothing).
    pub fn set_build(&self, start: StartBuild) {
        *self.build.lock().unwrap_or_else(|e| e.into_inner()) = start;
    }

    /// How a VM page's promote form starts a promotion.
    pub fn promote(&self) -> StartPromote {
        self.promote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces [`Self::promote`] (tests: an operation that copies nothing).
    pub fn set_promote(&self, start: StartPromote) {
        *self.promote.lock().unwrap_or_else(|e| e.into_inner()) = start;
    }

    pub fn serving(&self) -> Option<&Serving> {
        self.serving.as_ref().ok()
    }

    /// For `GET /v1/daemon`.
    pub fn info(&self) -> WebConsoleInfo {
        match &self.serving {
            Ok(s) => WebConsoleInfo {
                url: Some(s.url.clone()),
                error: None,
            },
            Err(e) => WebConsoleInfo {
                url: None,
                error: Some(e.to_string()),
            },
        }
    }

    /// `POST /v1/web/login`: a URL that signs a browser in once.
    pub fn login(&self) -> Result<WebLogin, ApiError> {
        self.login_valid_for(LOGIN_TTL)
    }

    fn login_valid_for(&self, ttl: Duration) -> Result<WebLogin, ApiError> {
        let serving = self.serving.as_ref().map_err(|e| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("the web console is not serving: {e}"),
            )
            .with_hint(match e {
                WebError::Disabled { .. } => {
                    "set `enabled = true` in the [web] table of config.toml and restart the \
                     daemon (banger daemon restart)"
                }
                WebError::Bind { .. } => {
                    "free the port or set another `listen` address in the [web] table of \
                     config.toml, then restart the daemon (banger daemon restart)"
                }
                WebError::Secret(_) => {
                    "check the state directory's permissions, then restart the daemon \
                     (banger daemon restart)"
                }
            })
        })?;
        let token = serving.auth.mint_login(ttl);
        Ok(WebLogin {
            url: format!("{}login?token={token}", serving.url),
            expires_at: Timestamp::from_millis(
                Timestamp::now().as_millis() + ttl.as_millis() as i64,
            ),
        })
    }
}

/// Reads the secret and binds the listener of `config`. Failures are logged and kept in the
/// returned console, never returned: the daemon serves its socket regardless.
pub async fn prepare(config: &WebConfig, paths: &Paths) -> (Console, Option<TcpListener>) {
    match try_prepare(config, paths).await {
        Ok((serving, listener)) => (Console::new(Ok(serving)), Some(listener)),
        Err(e) => {
            if !matches!(e, WebError::Disabled { .. }) {
                tracing::warn!(error = %e, "the web console is not serving");
            }
            (Console::new(Err(e)), None)
        }
    }
}

async fn try_prepare(
    config: &WebConfig,
    paths: &Paths,
) -> Result<(Serving, TcpListener), WebError> {
    if !config.enabled {
        return Err(WebError::Disabled {
            config: paths.config_file.clone(),
        });
    }
    let secret = auth::load_or_create_secret(&secret_path(&paths.state_dir))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| WebError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        addr: config.listen,
        source,
    })?;
    if !addr.ip().is_loopback() {
        // Said at every start, on purpose: this is a choice a user should not forget making.
        // Also on stderr, which a supervised or hand-started bangerd shows.
        eprintln!(
            "bangerd: WARNING: the web console is reachable from other machines at {addr} \
             (allow_remote = true); it speaks plain HTTP"
        );
        tracing::warn!(
            %addr,
            "!!! THE WEB CONSOLE IS REACHABLE FROM OTHER MACHINES ({addr}, `allow_remote = true`). \
             It can create, run and delete VMs, and its traffic (session cookie included) is plain, \
             unencrypted HTTP. Serve it on 127.0.0.1 unless you really mean this. !!!"
        );
    }
    let url = format!("http://{addr}/");
    tracing::info!(%url, "web console serving");
    Ok((
        Serving {
            auth: Auth::new(secret),
            hosts: AllowedHosts::for_listener(addr),
            url,
        },
        listener,
    ))
}

/// `$STATE/web-secret`.
pub fn secret_path(state_dir: &Path) -> PathBuf {
    state_dir.join("web-secret")
}

/// Serves the console on `listener` until the daemon shuts down.
pub fn serve(d: Arc<Daemon>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
    let mut stop = d.shutdown.subscribe();
    let app = router(d);
    tokio::spawn(async move {
        let signal = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::error!(error = %e, "the web console's server failed");
        }
    })
}

/// Every route of the console, behind the guard and with the security headers.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/login", get(pages::login))
        .route("/logout", post(pages::logout))
        .route("/vms", get(pages::vm_list).post(pages::create_vm))
        .route("/vms/{name}", get(pages::vm_page))
        .route(
            "/vms/{name}/delete",
            get(pages::confirm_delete_vm).post(pages::delete_vm),
        )
        .route("/vms/{name}/console", get(pages::vm_console))
        .route("/vms/{name}/guest", get(pages::vm_guest))
        .route("/vms/{name}/start", post(pages::start_vm))
        .route(
            "/vms/{name}/stop",
            get(pages::confirm_stop_vm).post(pages::stop_vm),
        )
        .route(
            "/vms/{name}/restart",
            get(pages::confirm_restart_vm).post(pages::restart_vm),
        )
        .route(
            "/vms/{name}/reset",
            get(pages::confirm_reset_vm).post(pages::reset_vm),
        )
        .route("/vms/{name}/pause", post(pages::pause_vm))
        .route("/vms/{name}/resume", post(pages::resume_vm))
        .route("/new/vm", get(pages::new_vm))
        .route(
            "/images",
            get(pages::image_list).post(pages::register_image),
        )
        .route("/images/{name}", get(pages::image_page))
        // An image may be named "bootstrap": its page is still at its name.
        .route(
            "/images/bootstrap",
            get(pages::bootstrap_image_page).post(pages::bootstrap_image),
        )
        .route("/snapshots", get(pages::snapshot_list))
        .route(
            "/snapshots/{name}/delete",
            get(pages::confirm_delete_snapshot).post(pages::delete_snapshot),
        )
        .route("/snapshots/{name}/restore", post(pages::restore_snapshot))
        .route("/new/image", get(pages::new_image))
        .route("/new/build", get(pages::new_build).post(pages::build_image))
        .route("/vms/{name}/promote", post(pages::promote_vm))
        .route("/picker", get(pages::picker))
        .route("/operations", get(pages::operation_list))
        .route("/operations/{id}", get(pages::operation_page))
        .route("/operations/{id}/json", get(pages::operation_json))
        .route("/operations/{id}/cancel", post(pages::cancel_operation))
        .route("/static/console.css", get(pages::stylesheet))
        .route("/static/console.js", get(pages::script))
        .route("/static/favicon.svg", get(pages::favicon))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(middleware::from_fn_with_state(d.clone(), guard::gate))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(guard::headers))
        .with_state(d)
}
