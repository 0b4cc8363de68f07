//! The console's handlers: each gathers what its page shows from the daemon's services
//! (the store, `crate::vm`, `crate::image`, the operations, capacity), builds the view
//! ([`super::views`]) and renders it. GET handlers only read. POST handlers take a
//! CSRF-checked form, call the service, and answer with a 303 to the page that shows the
//! result (Post/Redirect/Get), or re-render the form with its errors.
//!
//! The handlers stay in one file because they all have that one shape over the same few helpers
//! ([`PageError`], `chrome`, `see_other`); the views, forms, picker and guards they use are modules
//! of their own.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use banger_api::{ApiError, ErrorCode, Image, Operation, OperationState, Vm, VmState};
use serde::Deserialize;

use super::auth::{self, unix_now};
use super::forms::{
    self, BootstrapInput, BuildInput, CsrfForm, FieldErrors, ImageInput, PromoteInput, Viewer,
    VmInput,
};
use super::picker;
use super::views::{self, Chrome, GuestView, Link, OpView};
use crate::machine::{self, disks, guest};
use crate::{Daemon, image, vm};

const STYLESHEET: &str = include_str!("../../assets/console.css");
const SCRIPT: &str = include_str!("../../assets/console.js");
const FAVICON: &str = include_str!("../../assets/favicon.svg");

/// Runs store- and disk-bound work off the async workers.
async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

/// Starts the operation a form asks for and shows it, or the refusal on the form's page.
async fn show_operation(
    d: &Arc<Daemon>,
    form: &CsrfForm,
    start: impl FnOnce(&Arc<Daemon>) -> Result<Operation, ApiError> + Send + 'static,
) -> Page {
    let d2 = d.clone();
    let op = blocking(d, move |_| start(&d2))
        .await
        .map_err(|e| PageError::new(&form.viewer, e))?;
    Ok(see_other(&views::operation_href(&op.id)))
}

/// An error page in the console's layout; the status follows the error's code.
pub struct PageError {
    // Boxed: handlers return it in every `Err`, which should stay small.
    chrome: Box<Chrome>,
    error: ApiError,
}

impl PageError {
    fn new(viewer: &Viewer, error: ApiError) -> PageError {
        PageError {
            chrome: Box::new(viewer.chrome("")),
            error,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(
                code = %self.error.code,
                message = %self.error.message,
                "web console request failed"
            );
        }
        let title = match self.error.code {
            ErrorCode::NotFound => "Not found",
            ErrorCode::Internal | ErrorCode::Unavailable => "Something went wrong",
            _ => "Cannot do that",
        };
        views::render_with(
            status,
            &views::ErrorPage {
                chrome: *self.chrome,
                title: title.to_owned(),
                message: self.error.message,
                hint: views::console_hint(self.error.hint.as_deref()),
            },
        )
    }
}

type Page = Result<Response, PageError>;

/// A 303 to `location`: the answer to every successful POST.
fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// `?notice=...&name=...` after a redirect: fixed messages, so a link cannot make the console
/// say arbitrary things.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    notice: String,
    #[serde(default)]
    name: String,
}

impl Notice {
    fn text(&self) -> Option<String> {
        match self.notice.as_str() {
            "vm-created" => Some("VM created.".to_owned()),
            "vm-deleted" => Some(format!("Deleted VM {}.", self.name)),
            "vm-paused" => Some("VM paused.".to_owned()),
            "vm-reset" => Some("Root reset to the image; /root kept.".to_owned()),
            "vm-resumed" => Some("VM resumed.".to_owned()),
            "snapshot-deleted" => Some(format!("Deleted snapshot {}.", self.name)),
            "cancel-requested" => Some("Cancellation requested.".to_owned()),
            _ => None,
        }
    }
}

fn chrome(viewer: &Viewer, nav: &'static str, notice: &Notice) -> Chrome {
    Chrome {
        notice: notice.text(),
        ..viewer.chrome(nav)
    }
}

// ----- session -----

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    token: String,
}

/// `GET /login?token=…`: spends a one-time token and starts a session. The only GET that
/// changes anything, because the token arrives as a URL a terminal prints.
pub async fn login(State(d): State<Arc<Daemon>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(serving) = d.web.serving() else {
        return views::sign_in_required();
    };
    if q.token.is_empty() || !serving.auth.consume_login(&q.token) {
        tracing::warn!("web console: refused a login with an unknown, used or expired token");
        return views::refusal(
            StatusCode::UNAUTHORIZED,
            "Login link not valid",
            "This login link is unknown, was already used, or has expired (they work once, for \
             two minutes). Run `banger web` for a new one.",
        );
    }
    let (session, _) = serving.auth.new_session(unix_now());
    tracing::info!("web console: a browser signed in");
    let mut response = see_other("/");
    if let Ok(cookie) = HeaderValue::from_str(&serving.auth.set_cookie_header(&session)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /logout`: ends this browser's session.
pub async fn logout(State(d): State<Arc<Daemon>>, form: CsrfForm) -> Response {
    if let Some(serving) = d.web.serving() {
        serving.auth.revoke(&form.viewer.session, unix_now());
    }
    let mut response = views::refusal(
        StatusCode::OK,
        "Signed out",
        "This browser's session has ended. Run `banger web` to open the console again.",
    );
    if let Ok(cookie) = HeaderValue::from_str(&auth::clear_cookie_header()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

// ----- dashboard and lists -----

struct Overview {
    capacity: Result<banger_api::Capacity, ApiError>,
    vms: Vec<banger_api::Vm>,
    images: Vec<Image>,
}

pub async fn dashboard(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Query(notice): Query<Notice>,
) -> Page {
    let overview = blocking(&d, |d| {
        Ok(Overview {
            capacity: d.capacity(),
            vms: crate::vm::list(d)?,
            images: d.store.list_images()?,
        })
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    let (capacity, capacity_error) = match &overview.capacity {
        Ok(c) => (views::capacity_cards(c), None),
        Err(e) => (Vec::new(), Some(e.message.clone())),
    };
    Ok(views::render(&views::DashboardPage {
        chrome: chrome(&viewer, "dashboard", &notice),
        capacity,
        capacity_error,
        operations: d
            .ops
            .list()
            .iter()
            .rev()
            .filter(|op| op.state == OperationState::Running)
            .map(OpView::from)
            .collect(),
        vms: overview.vms.iter().map(views::VmRow::from).collect(),
        images: overview.images.iter().map(views::ImageRow::from).collect(),
    }))
}

pub async fn vm_list(State(d): State<Arc<Daemon>>, viewer: Viewer) -> Page {
    let vms = blocking(&d, crate::vm::list)
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(views::render(&views::VmListPage {
        chrome: viewer.chrome("vms"),
        vms: vms.iter().map(views::VmRow::from).collect(),
    }))
}

pub async fn image_list(State(d): State<Arc<Daemon>>, viewer: Viewer) -> Page {
    let images = blocking(&d, |d| Ok(d.store.list_images()?))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(views::render(&views::ImageListPage {
        chrome: viewer.chrome("images"),
        images: images.iter().map(views::ImageRow::from).collect(),
        bootstrap: BootstrapInput::defaults()
            .form(&FieldErrors::new(), viewer.privileges.bootstrap_problem()),
    }))
}

// ----- snapshots -----

/// `GET /snapshots`: every snapshot with its size and source, a "Create VM" form and a delete
/// link on each.
pub async fn snapshot_list(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Query(notice): Query<Notice>,
) -> Page {
    let snapshots = blocking(&d, crate::snapshot::list)
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(views::render(&views::SnapshotListPage {
        chrome: chrome(&viewer, "snapshots", &notice),
        snapshots: snapshots.iter().map(views::SnapshotRow::from).collect(),
        error: None,
    }))
}

/// `GET /snapshots/{name}/delete`: the confirmation step. Shows, changes nothing.
pub async fn confirm_delete_snapshot(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let snapshot = blocking(&d, move |d| crate::snapshot::show(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(views::render(&views::SnapshotDeletePage {
        chrome: viewer.chrome("snapshots"),
        snapshot: views::SnapshotRow::from(&snapshot),
    }))
}

/// `POST /snapshots/{name}/delete`.
pub async fn delete_snapshot(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    let viewer = form.viewer;
    let snapshot = blocking(&d, move |d| crate::snapshot::delete(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(see_other(&views::with_query(
        "/snapshots",
        &[("notice", "snapshot-deleted"), ("name", &snapshot.name)],
    )))
}

/// `POST /snapshots/{name}/restore`: a VM created from the snapshot (named by the form's
/// `name`, generated when empty), then its start's progress; a refusal is shown on the list.
pub async fn restore_snapshot(
    State(d): State<Arc<Daemon>>,
    Path(snapshot): Path<String>,
    form: CsrfForm,
) -> Page {
    let viewer = form.viewer;
    let name = form.fields.get("name").to_owned();
    let d2 = d.clone();
    let (outcome, snapshots) = blocking(&d, move |d| {
        let outcome = vm::create(
            &d2,
            banger_api::CreateVmRequest {
                name: (!name.is_empty()).then_some(name),
                from_snapshot: Some(snapshot),
                ..banger_api::CreateVmRequest::default()
            },
        );
        Ok((outcome, crate::snapshot::list(d)?))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match outcome {
        Ok(created) => Ok(see_other(&match created.operation {
            Some(op) => views::operation_href(&op.id),
            None => views::vm_href(&created.vm.name),
        })),
        Err(e) => Ok(views::render_with(
            StatusCode::BAD_REQUEST,
            &views::SnapshotListPage {
                chrome: viewer.chrome("snapshots"),
                snapshots: snapshots.iter().map(views::SnapshotRow::from).collect(),
                error: Some(match views::console_hint(e.hint.as_deref()) {
                    Some(hint) => format!("{} ({hint})", e.message),
                    None => e.message,
                }),
            },
        )),
    }
}

// ----- VMs -----

/// The last lines of `vm`'s guest console, or why they cannot be read.
fn console_tail(d: &Daemon, vm: &Vm, lines: usize) -> Result<Vec<String>, String> {
    let path = d.paths.vm_dir(&vm.id).join(disks::CONSOLE_LOG);
    banger_vmm::console_tail(&path, lines)
        .map_err(|e| format!("cannot read the console log {}: {e}", path.display()))
}

pub async fn vm_page(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (vm, console, services) = blocking(&d, move |d| {
        // `show`: with how its work disk relates to its image's seed.
        let vm = vm::show(d, &name)?;
        let console = console_tail(d, &vm, views::CONSOLE_LINES);
        // The page shows the VM even when its image's record cannot be read.
        let declared = match d.store.find_image(&vm.image.id) {
            Ok(Some(image)) => image.manifest.services,
            _ => Vec::new(),
        };
        let domain = d.info().dns_domain;
        let services = banger_api::service::service_addresses(&vm, &declared, domain.as_deref());
        Ok((vm, console, services))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    let guest = guest_view(&d, &vm).await;
    Ok(views::render(
        &views::VmPage::new(chrome(&viewer, "vms", &notice), &vm, &d.ops.list(), console)
            .with_services(&services)
            .with_guest(guest),
    ))
}

/// How long the VM page waits for each of the guest agent's answers: an agent that is not up
/// yet, or gone, never holds the page.
pub const GUEST_DEADLINE: Duration = Duration::from_secs(1);

async fn within<T>(
    answer: impl std::future::Future<Output = Result<T, banger_agent_protocol::client::AgentError>>,
) -> Result<T, String> {
    match tokio::time::timeout(GUEST_DEADLINE, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "it did not answer within {}",
            views::duration(GUEST_DEADLINE.as_millis() as u64)
        )),
    }
}

/// The guest section of `vm`'s page: its agent's health and listening ports, asked at once.
/// Only for a running VM (a paused guest cannot answer; a stopped one has no agent).
async fn guest_view(d: &Arc<Daemon>, vm: &Vm) -> Option<GuestView> {
    if vm.state != VmState::Running {
        return None;
    }
    let target = vm.clone();
    // Reads the VM's agent token.
    let agent = blocking(d, move |d| guest::agent(d, &target)).await;
    let (health, ports) = match agent {
        Ok(agent) => tokio::join!(within(agent.health()), within(agent.ports())),
        Err(e) => (Err(e.message.clone()), Err(e.message)),
    };
    Some(GuestView::new(vm, health, ports, env!("CARGO_PKG_VERSION")))
}

/// `GET /vms/{name}/guest`: the guest section alone, which the VM page's script swaps in
/// every few seconds; `204` once the VM no longer runs (the page reloads on its own then).
pub async fn vm_guest(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let vm = blocking(&d, move |d| vm::find(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(match guest_view(&d, &vm).await {
        Some(guest) => views::render(&views::GuestSection { guest }),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `GET /vms/{name}/console`: what the VM page's script polls while the VM runs.
pub async fn vm_console(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let console = blocking(&d, move |d| {
        let vm = vm::find(d, &name)?;
        let tail = console_tail(d, &vm, views::CONSOLE_LINES);
        Ok(views::ConsoleJson::new(&vm, tail))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    Ok(axum::Json(console).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct NewVmQuery {
    #[serde(default)]
    image: String,
}

/// `GET /new/vm`: the form with the configured defaults.
pub async fn new_vm(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Query(q): Query<NewVmQuery>,
) -> Page {
    let images = blocking(&d, |d| Ok(d.store.list_images()?))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    // Preselect the asked-for image, else the configured default, else the only one.
    let image = [q.image.as_str(), d.config.default_image.as_str()]
        .into_iter()
        .find(|name| images.iter().any(|i| i.name == *name))
        .map(str::to_owned)
        .or_else(|| (images.len() == 1).then(|| images[0].name.clone()))
        .unwrap_or_default();
    let input = VmInput::defaults(&d, image);
    Ok(views::render(&input.page(
        viewer.chrome("vms"),
        &images,
        &FieldErrors::new(),
    )))
}

/// `POST /vms`: creates the VM through `crate::vm::create`, then shows its start's progress,
/// or the VM when it was not to be started.
pub async fn create_vm(State(d): State<Arc<Daemon>>, form: CsrfForm) -> Page {
    let viewer = form.viewer;
    let input = VmInput::from_form(&form.fields);
    let attempt = input.clone();
    let d2 = d.clone();
    let (outcome, images) = blocking(&d, move |d| {
        let outcome = attempt
            .check(d)
            .and_then(|request| vm::create(&d2, request).map_err(forms::service_error));
        Ok((outcome, d.store.list_images()?))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match outcome {
        Ok(created) => Ok(see_other(&match created.operation {
            Some(op) => views::operation_href(&op.id),
            None => views::with_query(
                &views::vm_href(&created.vm.name),
                &[("notice", "vm-created")],
            ),
        })),
        Err(errors) => Ok(views::render_with(
            StatusCode::BAD_REQUEST,
            &input.page(viewer.chrome("vms"), &images, &errors),
        )),
    }
}

/// `GET /vms/{name}/delete`: the confirmation step. Shows, changes nothing.
pub async fn confirm_delete_vm(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let vm = blocking(&d, move |d| vm::find(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    let row = views::VmRow::from(&vm);
    Ok(views::render(&views::VmDeletePage {
        chrome: viewer.chrome("vms"),
        action: format!("{}/delete", row.href),
        vm: row,
    }))
}

/// `POST /vms/{name}/delete`.
pub async fn delete_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    let viewer = form.viewer;
    let vm = blocking(&d, move |d| vm::delete(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    Ok(see_other(&views::with_query(
        "/",
        &[("notice", "vm-deleted"), ("name", &vm.name)],
    )))
}

/// `POST /vms/{name}/start`: starts the start operation and shows it.
pub async fn start_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    show_operation(&d, &form, move |d| machine::request_start(d, &name)).await
}

/// `POST /vms/{name}/promote`: checks the image name, then the VM (the promote service: it
/// must be stopped), then starts the promotion and shows its operation; a refusal comes back
/// on the VM's page, under its promote form.
pub async fn promote_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    let viewer = form.viewer;
    let input = PromoteInput::from_form(&form.fields);
    let attempt = input.clone();
    let start = d.web.promote();
    let d2 = d.clone();
    let (outcome, vm, console) = blocking(&d, move |d| {
        let vm = vm::find(d, &name)?;
        let outcome = attempt
            .check(d, &vm.name)
            .and_then(|request| start(&d2, &request).map_err(forms::service_error));
        let console = console_tail(d, &vm, views::CONSOLE_LINES);
        Ok((outcome, vm, console))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match outcome {
        Ok(op) => Ok(see_other(&views::operation_href(&op.id))),
        Err(errors) => {
            let guest = guest_view(&d, &vm).await;
            Ok(views::render_with(
                StatusCode::BAD_REQUEST,
                &views::VmPage::new(viewer.chrome("vms"), &vm, &d.ops.list(), console)
                    .with_guest(guest)
                    .with_promote(input.form(&errors)),
            ))
        }
    }
}

/// The VM a stop or restart would act on, refused (as the service would) unless it runs.
async fn stoppable(
    d: &Arc<Daemon>,
    viewer: &Viewer,
    name: String,
    verb: &str,
) -> Result<Vm, PageError> {
    let vm = blocking(d, move |d| vm::find(d, &name))
        .await
        .map_err(|e| PageError::new(viewer, e))?;
    match vm.state {
        VmState::Running | VmState::Paused => Ok(vm),
        state => Err(PageError::new(
            viewer,
            ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {state}; only a running or paused VM can be {verb}",
                    vm.name
                ),
            ),
        )),
    }
}

/// `GET /vms/{name}/stop`: the confirmation step. Shows, changes nothing.
pub async fn confirm_stop_vm(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let vm = stoppable(&d, &viewer, name, "stopped").await?;
    Ok(views::render(&views::VmConfirmPage::stop(
        viewer.chrome("vms"),
        &vm,
        d.config.defaults.stop_timeout,
    )))
}

/// `POST /vms/{name}/stop`: starts the stop operation and shows it.
pub async fn stop_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    show_operation(&d, &form, move |d| machine::request_stop(d, &name)).await
}

/// `GET /vms/{name}/restart`: the confirmation step. Shows, changes nothing.
pub async fn confirm_restart_vm(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let vm = stoppable(&d, &viewer, name, "restarted").await?;
    Ok(views::render(&views::VmConfirmPage::restart(
        viewer.chrome("vms"),
        &vm,
        d.config.defaults.stop_timeout,
    )))
}

/// `POST /vms/{name}/restart`: starts the restart operation and shows it.
pub async fn restart_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    show_operation(&d, &form, move |d| machine::request_restart(d, &name)).await
}

/// `GET /vms/{name}/reset`: the confirmation step. Shows, changes nothing; a VM that is not
/// stopped gets bangerd's refusal, with how to stop it.
pub async fn confirm_reset_vm(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let vm = blocking(&d, move |d| vm::find(d, &name))
        .await
        .map_err(|e| PageError::new(&viewer, e))?;
    if !matches!(vm.state, VmState::Stopped | VmState::Failed) {
        return Err(PageError::new(
            &viewer,
            ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {}; only a stopped VM's root can be reset",
                    vm.name, vm.state
                ),
            )
            .with_hint("stop it first"),
        ));
    }
    Ok(views::render(&views::VmConfirmPage::reset(
        viewer.chrome("vms"),
        &vm,
    )))
}

/// `POST /vms/{name}/reset`: a fresh root from the VM's image (`vm reset`), then back to its
/// page.
pub async fn reset_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    let vm = blocking(&d, move |d| vm::reset(d, &name))
        .await
        .map_err(|e| PageError::new(&form.viewer, e))?;
    Ok(see_other(&views::with_query(
        &views::vm_href(&vm.name),
        &[("notice", "vm-reset")],
    )))
}

/// `POST /vms/{name}/pause`.
pub async fn pause_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    pause_or_resume(d, name, form, true).await
}

/// `POST /vms/{name}/resume`.
pub async fn resume_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    form: CsrfForm,
) -> Page {
    pause_or_resume(d, name, form, false).await
}

/// Pausing and resuming answer at once: back to the VM's page, which shows its new state.
async fn pause_or_resume(d: Arc<Daemon>, name: String, form: CsrfForm, pause: bool) -> Page {
    let vm = blocking(&d, move |d| machine::pause_or_resume(d, &name, pause))
        .await
        .map_err(|e| PageError::new(&form.viewer, e))?;
    Ok(see_other(&views::with_query(
        &views::vm_href(&vm.name),
        &[("notice", if pause { "vm-paused" } else { "vm-resumed" })],
    )))
}

// ----- images -----

pub async fn image_page(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Page {
    let (image, used_by) = blocking(&d, move |d| {
        let image = image::find(d, &name)?;
        let used_by = d.store.vms_using_image(&image.id)?;
        Ok((image, used_by))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    Ok(views::render(&views::ImagePage::new(
        viewer.chrome("images"),
        &image,
        &used_by,
    )))
}

/// `GET /images/bootstrap`: the page of an image named "bootstrap" (the path's POST starts
/// bootstraps).
pub async fn bootstrap_image_page(d: State<Arc<Daemon>>, viewer: Viewer) -> Page {
    image_page(d, viewer, Path("bootstrap".to_owned())).await
}

/// `POST /images/bootstrap`: checks the form, then the host (through the image service), then
/// starts the bootstrap and shows its operation; mistakes come back inline on the images page.
pub async fn bootstrap_image(State(d): State<Arc<Daemon>>, form: CsrfForm) -> Page {
    let viewer = form.viewer;
    let input = BootstrapInput::from_form(&form.fields);
    let attempt = input.clone();
    let start = d.web.bootstrap();
    let d2 = d.clone();
    let (outcome, images) = blocking(&d, move |d| {
        let outcome = attempt
            .check(d)
            .and_then(|request| start(&d2, &request).map_err(forms::service_error));
        Ok((outcome, d.store.list_images()?))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match outcome {
        Ok(op) => Ok(see_other(&views::operation_href(&op.id))),
        Err(errors) => Ok(views::render_with(
            StatusCode::BAD_REQUEST,
            &views::ImageListPage {
                chrome: viewer.chrome("images"),
                images: images.iter().map(views::ImageRow::from).collect(),
                bootstrap: input.form(&errors, viewer.privileges.bootstrap_problem()),
            },
        )),
    }
}

/// `GET /new/build`: the build form, with an example recipe.
pub async fn new_build(viewer: Viewer) -> Response {
    views::render(&BuildInput::defaults().page(viewer.chrome("images"), &FieldErrors::new()))
}

/// `POST /new/build`: checks the recipe and the overrides, then the host's part (the build
/// service), then starts the build and shows its operation; mistakes come back on the form.
pub async fn build_image(State(d): State<Arc<Daemon>>, form: CsrfForm) -> Page {
    let viewer = form.viewer;
    let input = BuildInput::from_form(&form.fields);
    let attempt = input.clone();
    let start = d.web.build();
    let d2 = d.clone();
    let outcome = blocking(&d, move |d| {
        Ok(attempt
            .check(d)
            .and_then(|request| start(&d2, &request).map_err(forms::service_error)))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match outcome {
        Ok(op) => Ok(see_other(&views::operation_href(&op.id))),
        Err(errors) => Ok(views::render_with(
            StatusCode::BAD_REQUEST,
            &input.page(viewer.chrome("images"), &errors),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ImageQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kernel: String,
    #[serde(default)]
    initrd: String,
    #[serde(default)]
    rootfs: String,
}

impl ImageQuery {
    fn input(&self) -> ImageInput {
        ImageInput {
            name: self.name.trim().to_owned(),
            kernel: self.kernel.trim().to_owned(),
            initrd: self.initrd.trim().to_owned(),
            rootfs: self.rootfs.trim().to_owned(),
        }
    }
}

/// `GET /new/image`: the form, prefilled from the query (the picker comes back here).
pub async fn new_image(viewer: Viewer, Query(q): Query<ImageQuery>) -> Response {
    views::render(&q.input().page(viewer.chrome("images"), &FieldErrors::new()))
}

/// `POST /images`: checks the files, then starts the registration operation and shows it.
pub async fn register_image(State(d): State<Arc<Daemon>>, form: CsrfForm) -> Page {
    let viewer = form.viewer;
    let input = ImageInput::from_form(&form.fields);
    let attempt = input.clone();
    let checked = blocking(&d, move |d| {
        Ok(attempt.check(d).and_then(|request| {
            image::check_register(d, &request)
                .map(|sources| (request.name, sources))
                .map_err(forms::service_error)
        }))
    })
    .await
    .map_err(|e| PageError::new(&viewer, e))?;
    match checked {
        Ok((name, sources)) => {
            let op = image::start_register(d.clone(), name, sources);
            Ok(see_other(&views::operation_href(&op.id)))
        }
        Err(errors) => Ok(views::render_with(
            StatusCode::BAD_REQUEST,
            &input.page(viewer.chrome("images"), &errors),
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PickerQuery {
    #[serde(default)]
    field: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    hidden: String,
    #[serde(flatten)]
    form: ImageQuery,
}

/// `GET /picker`: lists one directory for the register form. Read-only.
pub async fn picker(viewer: Viewer, Query(q): Query<PickerQuery>) -> Page {
    let field = match q.field.as_str() {
        "kernel" | "initrd" | "rootfs" => q.field.clone(),
        _ => {
            return Err(PageError::new(
                &viewer,
                ApiError::invalid("the picker fills the kernel, initrd or rootfs field"),
            ));
        }
    };
    let form = q.form.input();
    let current = match field.as_str() {
        "kernel" => &form.kernel,
        "initrd" => &form.initrd,
        _ => &form.rootfs,
    };
    let dir = if q.dir.is_empty() {
        picker::start_dir(current).display().to_string()
    } else {
        q.dir.clone()
    };
    let hidden = q.hidden == "1";
    let listing = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || picker::list(&dir, hidden, &picker::readable))
            .await
            .map_err(|e| PageError::new(&viewer, ApiError::internal(e.to_string())))?
    };
    let carried = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = [
            ("name", form.name.as_str()),
            ("kernel", form.kernel.as_str()),
            ("initrd", form.initrd.as_str()),
            ("rootfs", form.rootfs.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            match pairs.iter_mut().find(|(key, _)| key == k) {
                Some(pair) => pair.1 = (*v).to_owned(),
                None => pairs.push(((*k).to_owned(), (*v).to_owned())),
            }
        }
        pairs
    };
    let href = |path: &str, pairs: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        views::with_query(path, &refs)
    };
    let hidden_flag = if hidden { "1" } else { "" };
    let browse = |dir: &str, hidden_flag: &str| {
        href(
            "/picker",
            carried(&[("field", &field), ("dir", dir), ("hidden", hidden_flag)]),
        )
    };
    let (shown_dir, entries, omitted, error) = match listing {
        Ok(listing) => {
            let entries = listing
                .entries
                .iter()
                .map(|e| {
                    let path = e.path.display().to_string();
                    views::PickerEntry {
                        name: e.name.clone(),
                        href: if e.is_dir {
                            browse(&path, hidden_flag)
                        } else {
                            href("/new/image", carried(&[(field.as_str(), path.as_str())]))
                        },
                        is_dir: e.is_dir,
                        size: e.bytes.map(views::size).unwrap_or_default(),
                    }
                })
                .collect();
            (listing.dir, entries, listing.omitted, None)
        }
        Err(e) => (
            std::path::PathBuf::from(&dir),
            Vec::new(),
            0,
            Some(e.to_string()),
        ),
    };
    // Breadcrumbs: `/`, then each ancestor down to the directory shown.
    let mut crumbs = Vec::new();
    for ancestor in shown_dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let label = ancestor
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_owned());
        crumbs.push(Link {
            label,
            href: browse(&ancestor.display().to_string(), hidden_flag),
        });
    }
    let shown = shown_dir.display().to_string();
    Ok(views::render(&views::PickerPage {
        chrome: viewer.chrome("images"),
        hidden_toggle: Link {
            label: if hidden {
                "Hide hidden files".to_owned()
            } else {
                "Show hidden files".to_owned()
            },
            href: browse(&shown, if hidden { "" } else { "1" }),
        },
        back_href: href("/new/image", carried(&[])),
        home_href: browse(&picker::home().display().to_string(), hidden_flag),
        field,
        dir: shown,
        crumbs,
        entries,
        omitted,
        error,
    }))
}

// ----- operations -----

pub async fn operation_list(State(d): State<Arc<Daemon>>, viewer: Viewer) -> Response {
    views::render(&views::OperationListPage {
        chrome: viewer.chrome("operations"),
        operations: d.ops.list().iter().rev().map(OpView::from).collect(),
    })
}

fn find_operation(d: &Daemon, viewer: &Viewer, id: &str) -> Result<OpView, PageError> {
    d.ops.get(id).map(|op| OpView::from(&op)).ok_or_else(|| {
        PageError::new(
            viewer,
            ApiError::not_found(format!("no operation {id:?}"))
                .with_hint("finished operations are kept for a while; see the operations page"),
        )
    })
}

pub async fn operation_page(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let op = find_operation(&d, &viewer, &id)?;
    Ok(views::render(&views::OperationPage {
        chrome: chrome(&viewer, "operations", &notice),
        op,
    }))
}

/// `GET /operations/{id}/json`: what the page's script polls every second.
pub async fn operation_json(
    State(d): State<Arc<Daemon>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let op = find_operation(&d, &viewer, &id)?;
    Ok(axum::Json(op).into_response())
}

/// `POST /operations/{id}/cancel`.
pub async fn cancel_operation(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    form: CsrfForm,
) -> Page {
    let op = d.ops.cancel(&id);
    if op.is_none() {
        find_operation(&d, &form.viewer, &id)?;
    }
    Ok(see_other(&views::with_query(
        &views::operation_href(&id),
        &[("notice", "cancel-requested")],
    )))
}

// ----- assets and fallbacks -----

pub async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn favicon() -> Response {
    asset(FAVICON, "image/svg+xml")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub async fn not_found(viewer: Viewer) -> PageError {
    PageError::new(
        &viewer,
        ApiError::not_found("there is no such page in the console"),
    )
}

pub async fn method_not_allowed(viewer: Viewer) -> PageError {
    PageError::new(
        &viewer,
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "this page does not accept that kind of request",
        ),
    )
}
