//! The REST API on the Unix socket: routes, the JSON error shape for every failure (including
//! malformed bodies, unknown routes and wrong methods), the request body limit, the build-id
//! check, and the OpenAPI document generated from the handlers' annotations.
//!
//! It stays one file: the router, each handler and its OpenAPI annotation are the API's one
//! table, read side by side when a route changes; the work itself is in the services.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use banger_api::{
    ApiError, BUILD_ID_HEADER, Capacity, CloneVmRequest, CreateVmRequest, CreatedVm, DaemonInfo,
    DoctorReport, ErrorCode, ExportImageRequest, Image, ImportImageRequest, Operation, PoolEntry,
    PublishPortRequest, PublishedPort, RegisterImageRequest, SetPoolRequest, Snapshot,
    SnapshotVmRequest, UpdateVmRequest, Vm, WebLogin,
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::{Daemon, guest_api, image, machine, ports, snapshot, vm};

/// Largest request body accepted. Every request banger defines is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An error answer: the status follows the code.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.0.code, message = %self.0.message, "request failed");
        }
        (status, Json(self.0)).into_response()
    }
}

pub(crate) type Answer<T> = Result<T, Failure>;

/// A JSON body whose rejections are answered in banger's error shape. It must be a JSON
/// object: serde would otherwise read a struct from an array, field by field in order, and
/// `null` or a bare value never means a request.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match Json::<serde_json::Value>::from_request(req, state).await {
            Ok(Json(value)) => value,
            Err(rejection) => return Err(Failure(json_rejection(rejection))),
        };
        let kind = match &value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Null => Some("null"),
            serde_json::Value::Array(_) => Some("an array"),
            serde_json::Value::String(_) => Some("a string"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::Bool(_) => Some("a boolean"),
        };
        if let Some(kind) = kind {
            return Err(Failure(
                ApiError::invalid(format!(
                    "the request body must be a JSON object, not {kind}"
                ))
                .with_hint("see /v1/openapi.json for the request shapes"),
            ));
        }
        // Through axum again, for its error messages that name the field (`vcpus: ...`).
        let bytes =
            serde_json::to_vec(&value).map_err(|e| Failure(ApiError::internal(e.to_string())))?;
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(Failure(json_rejection(rejection))),
        }
    }
}

/// The body of a route that takes none: anything sent is refused rather than ignored, so a
/// request carrying options this route does not have (`{"force": true}` to a stop) is not
/// silently done some other way.
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|_| {
            Failure(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
            ))
        })?;
        if bytes.is_empty() {
            Ok(NoBody)
        } else {
            Err(Failure(
                ApiError::invalid("this route takes no request body")
                    .with_hint("see /v1/openapi.json for the request shapes"),
            ))
        }
    }
}

/// A query string whose rejections are answered in banger's error shape.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(Failure(
                ApiError::invalid(format!(
                    "bad query string: {}",
                    std::error::Error::source(&rejection)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| rejection.body_text())
                ))
                .with_hint("see /v1/openapi.json for the parameters"),
            )),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than {} KiB", BODY_LIMIT / 1024),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON",
        )
        .with_hint("send the header Content-Type: application/json"),
        _ => {
            let detail = match &rejection {
                JsonRejection::JsonDataError(e) => std::error::Error::source(e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text()),
                JsonRejection::JsonSyntaxError(e) => format!(
                    "malformed JSON: {}",
                    std::error::Error::source(e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.body_text())
                ),
                other => other.body_text(),
            };
            ApiError::invalid(detail).with_hint("see /v1/openapi.json for the request shapes")
        }
    }
}

/// Runs store-bound work off the async workers.
async fn blocking<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Daemon) -> Result<T, ApiError> + Send + 'static,
) -> Answer<T> {
    blocking_arc(d, move |d| f(d)).await
}

/// [`blocking`] for work that keeps a handle on the daemon (operations, supervision).
async fn blocking_arc<T: Send + 'static>(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Arc<Daemon>) -> Result<T, ApiError> + Send + 'static,
) -> Answer<T> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || f(&d))
        .await
        .map_err(|e| Failure(ApiError::internal(format!("request task failed: {e}"))))?
        .map_err(Failure)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bangerd",
        description = "The API of banger's daemon, served over HTTP/1.1 on a Unix socket \
                       ($XDG_RUNTIME_DIR/banger/bangerd.sock). Errors are {code, message, hint}."
    ),
    paths(
        daemon_info,
        shutdown,
        capacity,
        doctor,
        list_vms,
        create_vm,
        get_vm,
        update_vm,
        delete_vm,
        start_vm,
        stop_vm,
        restart_vm,
        reset_vm,
        pause_vm,
        resume_vm,
        list_published_ports,
        publish_port,
        unpublish_port,
        snapshot_vm,
        clone_vm,
        list_snapshots,
        get_snapshot,
        delete_snapshot,
        list_pool,
        set_pool,
        list_images,
        promote_image,
        build_image,
        register_image,
        bootstrap_image,
        export_image,
        import_image,
        get_image,
        delete_image,
        list_operations,
        get_operation,
        stream_operation,
        cancel_operation,
        web_login,
        guest_api::exec,
        guest_api::health,
        guest_api::ports,
        guest_api::stats,
        guest_api::console,
        guest_api::ssh,
        guest_api::copy_out,
        guest_api::copy_in,
        guest_api::stat
    ),
    modifiers(&CommonAnswers)
)]
pub struct ApiDoc;

/// The answers every route of a kind can give, added to each operation of the document once
/// rather than written on each: a 500; a 507 (a full disk) for a route that is not a GET; a
/// 404 for a route with a name or id in its path; for a
/// route that takes a JSON body 400 (a body that is not the documented object), 413 (over the
/// body limit) and 415 (not JSON); a non-GET route that takes no body answers 400 and 413 to
/// one sent anyway.
struct CommonAnswers;

impl utoipa::Modify for CommonAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, ResponseBuilder};
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let looks_up = path.contains('{');
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Delete, &mut item.delete),
                (HttpMethod::Patch, &mut item.patch),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let json_body = operation
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                let mut add = vec![("500", "banger failed (`internal`)")];
                if method != HttpMethod::Get {
                    add.push((
                        "507",
                        "a filesystem banger writes to is full (`no_space`); nothing is left \
                         of the request",
                    ));
                }
                if looks_up {
                    add.push(("404", "nothing has that name or id (`not_found`)"));
                }
                if json_body {
                    add.extend([
                        (
                            "400",
                            "the body is not the documented JSON object (`invalid_input`)",
                        ),
                        (
                            "413",
                            "the body is larger than the limit (`payload_too_large`)",
                        ),
                        ("415", "the body is not JSON (`unsupported_media_type`)"),
                    ]);
                } else if operation.request_body.is_none() && method != HttpMethod::Get {
                    add.extend([
                        (
                            "400",
                            "a body was sent; this route takes none (`invalid_input`)",
                        ),
                        (
                            "413",
                            "the body is larger than the limit (`payload_too_large`)",
                        ),
                    ]);
                }
                for (status, description) in add {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| answer(description).into());
                }
            }
        }
    }
}

/// A binary body in the OpenAPI document: a tar archive or a stream of exec frames.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// The router of the whole API.
pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/v1/daemon", get(daemon_info))
        .route("/v1/daemon/shutdown", post(shutdown))
        .route("/v1/capacity", get(capacity))
        .route("/v1/doctor", get(doctor))
        .route("/v1/vms", get(list_vms).post(create_vm))
        .route(
            "/v1/vms/{name}",
            get(get_vm).patch(update_vm).delete(delete_vm),
        )
        .route("/v1/vms/{name}/start", post(start_vm))
        .route("/v1/vms/{name}/stop", post(stop_vm))
        .route("/v1/vms/{name}/restart", post(restart_vm))
        .route("/v1/vms/{name}/reset", post(reset_vm))
        .route("/v1/vms/{name}/pause", post(pause_vm))
        .route("/v1/vms/{name}/resume", post(resume_vm))
        .route("/v1/vms/{name}/snapshot", post(snapshot_vm))
        .route("/v1/vms/{name}/clone", post(clone_vm))
        .route("/v1/pool", get(list_pool))
        .route("/v1/pool/{image}", put(set_pool))
        .route("/v1/snapshots", get(list_snapshots))
        .route(
            "/v1/snapshots/{name}",
            get(get_snapshot).delete(delete_snapshot),
        )
        .route("/v1/vms/{name}/exec", post(guest_api::exec))
        .route("/v1/vms/{name}/health", get(guest_api::health))
        .route("/v1/vms/{name}/ports", get(guest_api::ports))
        .route(
            "/v1/vms/{name}/ports/published",
            get(list_published_ports).post(publish_port),
        )
        .route(
            "/v1/vms/{name}/ports/published/{host_port}",
            axum::routing::delete(unpublish_port),
        )
        .route("/v1/vms/{name}/stats", get(guest_api::stats))
        .route("/v1/vms/{name}/console", get(guest_api::console))
        .route("/v1/vms/{name}/ssh", get(guest_api::ssh))
        .route(
            "/v1/vms/{name}/files",
            get(guest_api::copy_out).put(guest_api::copy_in),
        )
        .route("/v1/vms/{name}/files/stat", get(guest_api::stat))
        .route("/v1/images", get(list_images).post(register_image))
        // An image may be named "bootstrap": its GET and DELETE still work on this path.
        .route(
            "/v1/images/bootstrap",
            post(bootstrap_image)
                .get(|State(d): State<Arc<Daemon>>| {
                    get_image(State(d), Path("bootstrap".to_owned()))
                })
                .delete(|State(d): State<Arc<Daemon>>, no_body: NoBody| {
                    delete_image(State(d), Path("bootstrap".to_owned()), no_body)
                }),
        )
        // Likewise for an image named "import".
        .route(
            "/v1/images/import",
            post(import_image)
                .get(|State(d): State<Arc<Daemon>>| get_image(State(d), Path("import".to_owned())))
                .delete(|State(d): State<Arc<Daemon>>, no_body: NoBody| {
                    delete_image(State(d), Path("import".to_owned()), no_body)
                }),
        )
        .route("/v1/images/promote", post(promote_image))
        .route("/v1/images/build", post(build_image))
        .route("/v1/images/{name}", get(get_image).delete(delete_image))
        .route("/v1/images/{name}/export", post(export_image))
        .route("/v1/operations", get(list_operations))
        .route("/v1/operations/{id}", get(get_operation))
        .route("/v1/operations/{id}/stream", get(stream_operation))
        .route("/v1/operations/{id}/cancel", post(cancel_operation))
        .route("/v1/web/login", post(web_login))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async {
            Failure(
                ApiError::not_found("no such API route")
                    .with_hint("see /v1/openapi.json for the routes"),
            )
        })
        .method_not_allowed_fallback(|| async {
            Failure(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this route does not accept that method",
            ))
        })
        .layer(middleware::from_fn_with_state(d.clone(), check_build))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(d)
}

/// Refuses, without acting, a request from a client that expects another daemon build. The
/// daemon routes stay open so an outdated daemon can still be asked who it is and to exit.
async fn check_build(State(d): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    if let Some(expected) = req.headers().get(BUILD_ID_HEADER)
        && expected.as_bytes() != d.build_id.as_bytes()
        && !req.uri().path().starts_with("/v1/daemon")
    {
        return Failure(
            ApiError::new(
                ErrorCode::DaemonOutdated,
                format!(
                    "bangerd is running build {}, the client expects {}",
                    d.build_id,
                    expected.to_str().unwrap_or("?")
                ),
            )
            .with_hint("restart the daemon: banger daemon restart"),
        )
        .into_response();
    }
    next.run(req).await
}

#[utoipa::path(get, path = "/v1/daemon", responses((status = 200, body = DaemonInfo)))]
async fn daemon_info(State(d): State<Arc<Daemon>>) -> Json<DaemonInfo> {
    Json(d.info())
}

/// Asks the daemon to exit: running operations are cancelled and rolled back first.
#[utoipa::path(post, path = "/v1/daemon/shutdown", responses((status = 202, body = DaemonInfo)))]
async fn shutdown(State(d): State<Arc<Daemon>>, _: NoBody) -> (StatusCode, Json<DaemonInfo>) {
    tracing::info!("shutdown requested through the API");
    d.request_shutdown();
    (StatusCode::ACCEPTED, Json(d.info()))
}

#[utoipa::path(get, path = "/v1/capacity", responses((status = 200, body = Capacity)))]
async fn capacity(State(d): State<Arc<Daemon>>) -> Answer<Json<Capacity>> {
    blocking(&d, |d| d.capacity()).await.map(Json)
}

/// Checks the host: KVM and its kind, VMMs, networking tools, disk, e2fsprogs, OpenSSH, sudo.
#[utoipa::path(get, path = "/v1/doctor", responses((status = 200, body = DoctorReport)))]
async fn doctor(State(d): State<Arc<Daemon>>) -> Answer<Json<DoctorReport>> {
    blocking(&d, |d| Ok(crate::doctor::report(d)))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/vms", responses((status = 200, body = [Vm])))]
async fn list_vms(State(d): State<Arc<Daemon>>) -> Answer<Json<Vec<Vm>>> {
    blocking(&d, vm::list).await.map(Json)
}

/// Creates a VM: records it, makes its disks and, unless `start` is false, starts it. The
/// answer carries the start operation to follow.
#[utoipa::path(post, path = "/v1/vms", request_body = CreateVmRequest, responses(
    (status = 201, body = CreatedVm), (status = 400, body = ApiError),
    (status = 404, body = ApiError, description = "no snapshot `from_snapshot`"),
    (status = 409, body = ApiError)))]
async fn create_vm(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<CreateVmRequest>,
) -> Answer<(StatusCode, Json<CreatedVm>)> {
    blocking_arc(&d, move |d| vm::create(d, req))
        .await
        .map(|created| (StatusCode::CREATED, Json(created)))
}

/// Starts a stopped or failed VM, as an operation.
#[utoipa::path(post, path = "/v1/vms/{name}/start", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn start_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Response> {
    blocking_arc(&d, move |d| machine::request_start(d, &name))
        .await
        .map(accepted)
}

/// Stops a running or paused VM, as an operation: the guest is asked to shut down, and its
/// VMM ended after `defaults.stop_timeout`.
#[utoipa::path(post, path = "/v1/vms/{name}/stop", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn stop_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Response> {
    blocking_arc(&d, move |d| machine::request_stop(d, &name))
        .await
        .map(accepted)
}

/// Stops and starts a running or paused VM, as one operation.
#[utoipa::path(post, path = "/v1/vms/{name}/restart", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 202, body = Operation), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn restart_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Response> {
    blocking_arc(&d, move |d| machine::request_restart(d, &name))
        .await
        .map(accepted)
}

/// Gives a stopped VM a fresh root from its image: its overlay disk is replaced by a blank one.
/// Its work disk (`/root`), name, address, keys and spec stay; the next boot re-applies its
/// identity from its config drive. Refused with `invalid_state` unless the VM is stopped.
#[utoipa::path(post, path = "/v1/vms/{name}/reset", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 404, body = ApiError), (status = 409, body = ApiError),
    (status = 422, body = ApiError)))]
async fn reset_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Vm>> {
    blocking(&d, move |d| vm::reset(d, &name)).await.map(Json)
}

/// Pauses a running VM (its vCPUs stop; memory stays allocated).
#[utoipa::path(post, path = "/v1/vms/{name}/pause", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn pause_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Vm>> {
    blocking(&d, move |d| machine::pause_or_resume(d, &name, true))
        .await
        .map(Json)
}

/// Resumes a paused VM.
#[utoipa::path(post, path = "/v1/vms/{name}/resume", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn resume_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Vm>> {
    blocking(&d, move |d| machine::pause_or_resume(d, &name, false))
        .await
        .map(Json)
}

/// Snapshots a running or paused Firecracker VM: its memory, device state and copies of its
/// disks. The VM is paused while it is written and runs on afterwards.
#[utoipa::path(post, path = "/v1/vms/{name}/snapshot", params(("name" = String, Path, description = "VM name or id")),
    request_body = SnapshotVmRequest,
    responses((status = 201, body = Snapshot), (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn snapshot_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Body(req): Body<SnapshotVmRequest>,
) -> Answer<(StatusCode, Json<Snapshot>)> {
    blocking(&d, move |d| snapshot::create(d, &name, req))
        .await
        .map(|snapshot| (StatusCode::CREATED, Json(snapshot)))
}

/// A new VM restored from a snapshot of this one, with its own identity (name, IP, MAC, host
/// key, agent token); the answer carries its start operation.
#[utoipa::path(post, path = "/v1/vms/{name}/clone", params(("name" = String, Path, description = "VM name or id")),
    request_body = CloneVmRequest,
    responses((status = 201, body = CreatedVm), (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError), (status = 422, body = ApiError)))]
async fn clone_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Body(req): Body<CloneVmRequest>,
) -> Answer<(StatusCode, Json<CreatedVm>)> {
    blocking_arc(&d, move |d| snapshot::clone(d, &name, req))
        .await
        .map(|created| (StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/v1/snapshots", responses((status = 200, body = [Snapshot])))]
async fn list_snapshots(State(d): State<Arc<Daemon>>) -> Answer<Json<Vec<Snapshot>>> {
    blocking(&d, snapshot::list).await.map(Json)
}

#[utoipa::path(get, path = "/v1/snapshots/{name}", params(("name" = String, Path, description = "snapshot name or id")),
    responses((status = 200, body = Snapshot), (status = 404, body = ApiError)))]
async fn get_snapshot(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Answer<Json<Snapshot>> {
    blocking(&d, move |d| snapshot::show(d, &name))
        .await
        .map(Json)
}

/// Deletes a snapshot and its files. VMs restored from it keep their own copies.
#[utoipa::path(delete, path = "/v1/snapshots/{name}", params(("name" = String, Path, description = "snapshot name or id")),
    responses((status = 200, body = Snapshot), (status = 404, body = ApiError)))]
async fn delete_snapshot(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Snapshot>> {
    blocking(&d, move |d| snapshot::delete(d, &name))
        .await
        .map(Json)
}

/// The warm pool of every image that keeps one: wanted and ready VMs, their spec, the
/// template's size and the last fill error.
#[utoipa::path(get, path = "/v1/pool", responses((status = 200, body = [PoolEntry])))]
async fn list_pool(State(d): State<Arc<Daemon>>) -> Answer<Json<Vec<PoolEntry>>> {
    blocking(&d, crate::warm::list).await.map(Json)
}

/// Sets how many ready VMs of an image the warm pool keeps (0 turns it off); stored, so it
/// outlives the daemon. Firecracker only: refused with `unsupported` on a QEMU host.
#[utoipa::path(put, path = "/v1/pool/{image}", params(("image" = String, Path, description = "image name")),
    request_body = SetPoolRequest,
    responses((status = 200, body = PoolEntry), (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 501, body = ApiError)))]
async fn set_pool(
    State(d): State<Arc<Daemon>>,
    Path(image): Path<String>,
    Body(req): Body<SetPoolRequest>,
) -> Answer<Json<PoolEntry>> {
    blocking(&d, move |d| crate::warm::set(d, &image, req.size))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/vms/{name}", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 404, body = ApiError)))]
async fn get_vm(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Answer<Json<Vm>> {
    blocking(&d, move |d| vm::show(d, &name)).await.map(Json)
}

#[utoipa::path(patch, path = "/v1/vms/{name}", request_body = UpdateVmRequest,
    params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn update_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Body(req): Body<UpdateVmRequest>,
) -> Answer<Json<Vm>> {
    blocking(&d, move |d| vm::update(d, &name, req))
        .await
        .map(Json)
}

#[utoipa::path(delete, path = "/v1/vms/{name}", params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = Vm), (status = 404, body = ApiError)))]
async fn delete_vm(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Vm>> {
    blocking(&d, move |d| vm::delete(d, &name)).await.map(Json)
}

/// The host ports forwarded to the VM (its published ports), by host port.
#[utoipa::path(get, path = "/v1/vms/{name}/ports/published",
    params(("name" = String, Path, description = "VM name or id")),
    responses((status = 200, body = [PublishedPort]), (status = 404, body = ApiError)))]
async fn list_published_ports(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> Answer<Json<Vec<PublishedPort>>> {
    blocking(&d, move |d| ports::list(d, &name)).await.map(Json)
}

/// Publishes a host port to a port of the VM. A running (or paused) VM's listener opens at
/// once; a stopped VM's opens at its next start. Refused with `in_use` when another VM
/// publishes the host port or a program on the host holds it; nothing is stored then.
#[utoipa::path(post, path = "/v1/vms/{name}/ports/published", request_body = PublishPortRequest,
    params(("name" = String, Path, description = "VM name or id")),
    responses((status = 201, body = Vm), (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError)))]
async fn publish_port(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Body(req): Body<PublishPortRequest>,
) -> Answer<(StatusCode, Json<Vm>)> {
    blocking(&d, move |d| ports::add(d, &name, &req))
        .await
        .map(|vm| (StatusCode::CREATED, Json(vm)))
}

/// Stops forwarding a host port to the VM: its listener closes and open connections end.
#[utoipa::path(delete, path = "/v1/vms/{name}/ports/published/{host_port}",
    params(("name" = String, Path, description = "VM name or id"),
           ("host_port" = u16, Path, description = "the published host port")),
    responses((status = 200, body = Vm), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
async fn unpublish_port(
    State(d): State<Arc<Daemon>>,
    Path((name, host_port)): Path<(String, String)>,
    _: NoBody,
) -> Answer<Json<Vm>> {
    let host_port: i64 = host_port.parse().map_err(|_| {
        Failure(
            ApiError::invalid(format!("host port {host_port:?} is not a number"))
                .with_hint("the path ends in the published host port, 1 to 65535"),
        )
    })?;
    blocking(&d, move |d| ports::remove(d, &name, host_port))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/images", responses((status = 200, body = [Image])))]
async fn list_images(State(d): State<Arc<Daemon>>) -> Answer<Json<Vec<Image>>> {
    blocking(&d, |d| Ok(d.store.list_images()?)).await.map(Json)
}

/// Registers an image from existing files: checks them, then copies them into the image
/// store as an operation.
#[utoipa::path(post, path = "/v1/images", request_body = RegisterImageRequest, responses(
    (status = 202, body = Operation), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn register_image(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<RegisterImageRequest>,
) -> Answer<Response> {
    let sources = {
        let req = req.clone();
        blocking(&d, move |d| image::check_register(d, &req)).await?
    };
    let op = image::start_register(d.clone(), req.name, sources);
    Ok(accepted(op))
}

/// Bootstraps an image from distribution packages (debootstrap, the Debian cloud kernel, banger's
/// initramfs) as an operation. Refused up front when the host lacks what it needs.
#[utoipa::path(post, path = "/v1/images/bootstrap", request_body = banger_api::BootstrapImageRequest, responses(
    (status = 202, body = Operation), (status = 400, body = ApiError), (status = 409, body = ApiError),
    (status = 503, body = ApiError)))]
async fn bootstrap_image(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<banger_api::BootstrapImageRequest>,
) -> Answer<Response> {
    let checked = blocking(&d, move |d| image::check_bootstrap(d, &req)).await?;
    let op = image::start_bootstrap(d.clone(), checked);
    Ok(accepted(op))
}

/// Builds a new image from a recipe, as an operation whose result is the image: a temporary
/// VM of the base image is provisioned and its root promoted. Inputs already built come from
/// the build cache.
#[utoipa::path(post, path = "/v1/images/build", request_body = banger_api::BuildImageRequest, responses(
    (status = 202, body = Operation), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn build_image(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<banger_api::BuildImageRequest>,
) -> Answer<Response> {
    let checked = blocking(&d, move |d| crate::build::check(d, &req)).await?;
    let op = crate::build::start(d.clone(), checked);
    Ok(accepted(op))
}

/// Makes a new image of a stopped VM's root (its image with its overlay on top), as an
/// operation whose result is the image. The VM is untouched; its disks are copied first.
#[utoipa::path(post, path = "/v1/images/promote", request_body = banger_api::PromoteImageRequest, responses(
    (status = 202, body = Operation), (status = 400, body = ApiError), (status = 404, body = ApiError),
    (status = 409, body = ApiError)))]
async fn promote_image(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<banger_api::PromoteImageRequest>,
) -> Answer<Response> {
    let checked = blocking(&d, move |d| crate::promote::check(d, &req)).await?;
    let op = crate::promote::start(d.clone(), checked);
    Ok(accepted(op))
}

/// Writes an image (boot set, manifest, work seed) into one file on the daemon's host, as an
/// operation whose result is an `ExportedImage`. The file appears only once complete; a failed
/// or cancelled export leaves none.
#[utoipa::path(post, path = "/v1/images/{name}/export", request_body = ExportImageRequest,
    params(("name" = String, Path, description = "image name or id")),
    responses((status = 202, body = Operation), (status = 400, body = ApiError),
    (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn export_image(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    Body(req): Body<ExportImageRequest>,
) -> Answer<Response> {
    let checked = blocking(&d, move |d| image::check_export(d, &name, &req)).await?;
    let op = image::start_export(d.clone(), checked);
    Ok(accepted(op))
}

/// Makes an image from a file `image export` wrote, as an operation. The archive's label and
/// manifest are checked first: a foreign file, one from a newer banger or a taken name is
/// refused without starting. A failed or cancelled import leaves no files and no record.
#[utoipa::path(post, path = "/v1/images/import", request_body = ImportImageRequest, responses(
    (status = 202, body = Operation), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
async fn import_image(
    State(d): State<Arc<Daemon>>,
    Body(req): Body<ImportImageRequest>,
) -> Answer<Response> {
    let checked = blocking(&d, move |d| image::check_import(d, &req)).await?;
    let op = image::start_import(d.clone(), checked);
    Ok(accepted(op))
}

fn accepted(op: Operation) -> Response {
    let location = format!("/v1/operations/{}", op.id);
    let mut response = (StatusCode::ACCEPTED, Json(op)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

#[utoipa::path(get, path = "/v1/images/{name}", params(("name" = String, Path, description = "image name or id")),
    responses((status = 200, body = Image), (status = 404, body = ApiError)))]
async fn get_image(State(d): State<Arc<Daemon>>, Path(name): Path<String>) -> Answer<Json<Image>> {
    blocking(&d, move |d| image::find(d, &name)).await.map(Json)
}

/// Deletes an image; refused with `in_use` while VMs use it.
#[utoipa::path(delete, path = "/v1/images/{name}", params(("name" = String, Path, description = "image name or id")),
    responses((status = 200, body = Image), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
async fn delete_image(
    State(d): State<Arc<Daemon>>,
    Path(name): Path<String>,
    _: NoBody,
) -> Answer<Json<Image>> {
    blocking(&d, move |d| image::delete(d, &name))
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/operations", responses((status = 200, body = [Operation])))]
async fn list_operations(State(d): State<Arc<Daemon>>) -> Json<Vec<Operation>> {
    Json(d.ops.list())
}

#[utoipa::path(get, path = "/v1/operations/{id}", params(("id" = String, Path)),
    responses((status = 200, body = Operation), (status = 404, body = ApiError)))]
async fn get_operation(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Answer<Json<Operation>> {
    d.ops
        .get(&id)
        .map(Json)
        .ok_or_else(|| operation_not_found(&id))
}

/// Streams the operation as newline-delimited JSON: the current state at once, then one line
/// per change, ending after the line that reports it finished.
#[utoipa::path(get, path = "/v1/operations/{id}/stream", params(("id" = String, Path)),
    responses((status = 200, description = "one Operation per line, the last one finished",
        content_type = "application/x-ndjson", body = Operation),
    (status = 404, body = ApiError)))]
async fn stream_operation(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
) -> Answer<Response> {
    let rx = d
        .ops
        .subscribe(&id)
        .ok_or_else(|| operation_not_found(&id))?;
    let lines =
        futures_util::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let op = rx.borrow_and_update().clone();
            let mut line = serde_json::to_vec(&op).unwrap_or_default();
            line.push(b'\n');
            let finished = op.state.is_finished();
            Some((
                Ok::<_, Infallible>(Bytes::from(line)),
                (rx, false, finished),
            ))
        });
    let mut response = axum::body::Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Requests cancellation; the operation rolls back what it did and ends `cancelled`.
#[utoipa::path(post, path = "/v1/operations/{id}/cancel", params(("id" = String, Path)),
    responses((status = 202, body = Operation), (status = 404, body = ApiError)))]
async fn cancel_operation(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    _: NoBody,
) -> Answer<(StatusCode, Json<Operation>)> {
    d.ops
        .cancel(&id)
        .map(|op| (StatusCode::ACCEPTED, Json(op)))
        .ok_or_else(|| operation_not_found(&id))
}

fn operation_not_found(id: &str) -> Failure {
    Failure(
        ApiError::not_found(format!("no operation {id:?}"))
            .with_hint("finished operations are kept for a while; list them at /v1/operations"),
    )
}

/// Mints a one-time URL that signs a browser in to the web console (single use, valid for two
/// minutes). Only the socket's owner can ask, which is what keeps the console theirs.
#[utoipa::path(post, path = "/v1/web/login", responses(
    (status = 200, body = WebLogin), (status = 503, body = ApiError)))]
async fn web_login(State(d): State<Arc<Daemon>>, _: NoBody) -> Answer<Json<WebLogin>> {
    d.web.login().map(Json).map_err(Failure)
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests;
