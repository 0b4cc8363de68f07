//! The image service: registration and bootstrap as operations (build or copy into the image
//! store, write the manifest, record), listing, and deletion that refuses while VMs use the
//! image.

use std::sync::Arc;

use banger_api::{
    ApiError, BootstrapImageRequest, ErrorCode, Image, Operation, OperationKind,
    RegisterImageRequest, validate,
};
use banger_host::doctor::{CheckStatus, Doctor, Preflight};
use banger_host::network::NetConfig;
use banger_host::runner::RealRunner;
use banger_image::bootstrap;
use banger_image::register::{self, Reporter};

use crate::Daemon;
use crate::operation::OperationContext;

/// The last stage of a registration: the store learns about the image.
const RECORD_STAGE: &str = "record";

/// A valid name no image has yet: what registering and bootstrapping (API and console) need.
pub fn check_new_name(d: &Daemon, name: &str) -> Result<(), ApiError> {
    validate::name("image", name)?;
    if d.store.find_image(name)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("an image named {name:?} already exists"),
        )
        .with_hint("pick another name, or delete the old image with `banger image delete NAME`"));
    }
    Ok(())
}

/// Checks a registration request. Runs on the blocking pool (it reads file headers).
pub fn check_register(
    d: &Daemon,
    req: &RegisterImageRequest,
) -> Result<register::CheckedSources, ApiError> {
    check_new_name(d, &req.name)?;
    let mut sources = register::check_sources(&req.kernel, req.initrd.as_deref(), &req.rootfs)?;
    sources.services = register::services_in_rootfs(&RealRunner, &sources.rootfs);
    Ok(sources)
}

/// Starts the registration operation of checked sources.
pub fn start_register(
    d: Arc<Daemon>,
    name: String,
    sources: register::CheckedSources,
) -> Operation {
    let mut stages: Vec<&str> = register::STAGES.to_vec();
    stages.push(RECORD_STAGE);
    let ops = d.ops.clone();
    ops.spawn(OperationKind::RegisterImage, &name.clone(), &stages, move |cx| {
        let id = format!("{:016x}", rand::random::<u64>());
        let dir = d.paths.image_dir(&id);
        let image = register::install(
            &id,
            &name,
            &sources,
            &dir,
            &OpReporter(cx),
            &mut banger_host::disk::copy_file,
        )?;
        cx.begin(RECORD_STAGE);
        if let Err(e) = cx.check_cancelled().and_then(|()| Ok(d.store.insert_image(&image)?)) {
            if let Err(rm) = std::fs::remove_dir_all(&dir) {
                tracing::error!(dir = %dir.display(), error = %rm, "cannot remove an unrecorded image");
            }
            return Err(e);
        }
        cx.done(RECORD_STAGE, None);
        tracing::info!(image = %image.name, id = %image.id, "image registered");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

/// A bootstrap request, checked: the image name and the suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedBootstrap {
    pub name: String,
    pub suite: String,
}

/// Checks a bootstrap request and the host (debootstrap, apt, e2fsprogs, disk space, sudo).
/// Runs on the blocking pool (the host checks run short commands).
pub fn check_bootstrap(
    d: &Daemon,
    req: &BootstrapImageRequest,
) -> Result<CheckedBootstrap, ApiError> {
    validate::bootstrap_distro(&req.distro)?;
    let name = req.name.clone().unwrap_or_else(|| req.distro.clone());
    check_new_name(d, &name)?;
    let suite = req
        .suite
        .clone()
        .unwrap_or_else(|| bootstrap::DEFAULT_SUITE.to_owned());
    validate::suite(&suite)?;
    let net = NetConfig::new(d.pool.gateway(), d.pool.prefix_len());
    let checks =
        Doctor::new(&RealRunner, net, d.paths.state_dir.clone()).preflight(Preflight::Bootstrap);
    if let Some(failed) = checks.into_iter().find(|c| c.status == CheckStatus::Fail) {
        let error = ApiError::new(ErrorCode::Unavailable, failed.detail);
        return Err(match failed.fix {
            Some(fix) => error.with_hint(fix),
            None => error,
        });
    }
    Ok(CheckedBootstrap { name, suite })
}

/// Where bootstraps keep downloads between runs: `<state>/cache/bootstrap`.
pub fn bootstrap_cache_dir(d: &Daemon) -> std::path::PathBuf {
    match &d.config.cache_dir {
        Some(dir) => dir.join("bootstrap"),
        None => d.paths.state_dir.join("cache/bootstrap"),
    }
}

/// Starts the bootstrap operation of a checked request.
pub fn start_bootstrap(d: Arc<Daemon>, checked: CheckedBootstrap) -> Operation {
    let mut stages: Vec<&str> = bootstrap::STAGES.to_vec();
    stages.push(RECORD_STAGE);
    let ops = d.ops.clone();
    let target = checked.name.clone();
    ops.spawn(OperationKind::BootstrapImage, &target, &stages, move |cx| {
        let id = format!("{:016x}", rand::random::<u64>());
        let dir = d.paths.image_dir(&id);
        // Staging lives next to the image store, on the same filesystem.
        let staging_parent = d.paths.state_dir.join("staging");
        std::fs::create_dir_all(&staging_parent).map_err(|e| {
            ApiError::internal(format!("cannot create {}: {e}", staging_parent.display()))
        })?;
        // banger's shipped guest /init, written where the initramfs builder can read it.
        let binaries = tempfile::Builder::new()
            .prefix(".guest-")
            .tempdir_in(&staging_parent)
            .map_err(|e| ApiError::internal(format!("cannot stage the guest binaries: {e}")))?;
        let write = |binary: banger_guest::GuestBinary| {
            let path = binaries.path().join(binary.name);
            binary
                .write_to(&path)
                .map(|()| path.clone())
                .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))
        };
        let mut spec = bootstrap::BootstrapSpec::new(
            &checked.name,
            &checked.suite,
            write(banger_guest::INIT)?,
        );
        spec.agent_binary = Some(write(banger_guest::AGENT)?);
        let host = bootstrap::Host::new(&RealRunner, bootstrap_cache_dir(&d), staging_parent);
        // What a bootstrap interrupted by a crash left behind, when no other bootstrap runs.
        let running = d
            .ops
            .list()
            .iter()
            .filter(|op| op.kind == OperationKind::BootstrapImage && !op.state.is_finished())
            .count();
        if running == 1 {
            match bootstrap::remove_stale_staging(&host) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(?removed, "removed the staging of interrupted bootstraps");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove an interrupted bootstrap's staging"),
            }
        }
        let image = bootstrap::bootstrap(&id, &spec, &host, &dir, &OpReporter(cx))
            .map_err(ApiError::from)?;
        cx.begin(RECORD_STAGE);
        if let Err(e) = cx.check_cancelled().and_then(|()| Ok(d.store.insert_image(&image)?)) {
            if let Err(rm) = std::fs::remove_dir_all(&dir) {
                tracing::error!(dir = %dir.display(), error = %rm, "cannot remove an unrecorded image");
            }
            return Err(e);
        }
        cx.done(RECORD_STAGE, None);
        tracing::info!(image = %image.name, id = %image.id, suite = %checked.suite, "image bootstrapped");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

struct OpReporter<'a>(&'a OperationContext);

impl Reporter for OpReporter<'_> {
    fn begin(&self, stage: &str) {
        self.0.begin(stage);
    }
    fn progress(&self, stage: &str, done: u64, total: u64) {
        self.0.progress(stage, done, total, "bytes");
    }
    fn done(&self, stage: &str, note: Option<String>) {
        self.0.done(stage, note);
    }
    fn skip(&self, stage: &str, reason: &str) {
        self.0.skip(stage, reason);
    }
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}

/// `GET /v1/images/{name}`.
pub fn find(d: &Daemon, name: &str) -> Result<Image, ApiError> {
    d.store.find_image(name)?.ok_or_else(|| {
        ApiError::not_found(format!("no image named {name:?}"))
            .with_hint("list images with `banger image list`")
    })
}

/// `DELETE /v1/images/{name}`: the record first (refused while VMs use it), then the files.
pub fn delete(d: &Daemon, name: &str) -> Result<Image, ApiError> {
    let image = find(d, name)?;
    d.store.delete_image(&image.id)?;
    d.disks.forget_image(&image.id);
    let dir = d.paths.image_dir(&image.id);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(dir = %dir.display(), error = %e, "cannot remove a deleted image's files");
    }
    tracing::info!(image = %image.name, id = %image.id, "image deleted");
    Ok(image)
}
