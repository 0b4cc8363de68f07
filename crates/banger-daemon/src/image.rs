//! The image service: registration, bootstrap and import as operations (build, copy or unpack
//! into the image store, write the manifest, record), export into one file as an operation,
//! listing, and deletion that refuses while VMs use the image. Builds and promotions may
//! replace an image of their name ([`record`]); the image they replace is retired while VMs
//! or snapshots use it, and deleted by [`collect_retired`] once none does.

use crate::api_error::ToApi;
use std::sync::Arc;

use std::path::{Path, PathBuf};

use banger_api::{
    ApiError, BootstrapImageRequest, ErrorCode, ExportImageRequest, ExportedImage, Image,
    ImportImageRequest, Operation, OperationKind, RegisterImageRequest, validate,
};
use banger_host::doctor::{CheckStatus, Doctor, Preflight};
use banger_host::network::NetConfig;
use banger_host::runner::RealRunner;
use banger_image::archive;
use banger_image::bootstrap;
use banger_image::register::{self, Reporter};

use crate::Daemon;
use crate::operation::OperationContext;

/// The last stage of a registration: the store learns about the image.
pub const RECORD_STAGE: &str = "record";

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

/// A valid image name for a build or promotion: free, or with `replace` perhaps held by the
/// image the new one replaces.
pub fn check_name(d: &Daemon, name: &str, replace: bool) -> Result<(), ApiError> {
    if replace {
        return validate::name("image", name);
    }
    check_new_name(d, name).map_err(|e| {
        if e.code == ErrorCode::AlreadyExists {
            e.with_hint(format!(
                "pick another name; or put the new image in its place with --replace (the old \
                 one is kept, renamed, while VMs or snapshots use it); or delete the old image \
                 first with `banger image delete {name}`"
            ))
        } else {
            e
        }
    })
}

/// Records `image`, made by an operation. With `replace`, it takes the name of the image
/// holding it, if any: that image's warm pool is drained, then the image is deleted when no
/// VM or snapshot uses it, else retired (see [`banger_store::Replaced`]).
pub fn record(d: &Daemon, image: &Image, replace: bool) -> Result<(), ApiError> {
    if !replace {
        return Ok(d.store.insert_image(image)?);
    }
    if let Some(old) = d.store.find_image(&image.name)?
        && old.name == image.name
    {
        crate::warm::drain_image(d, &old);
    }
    match d.store.insert_image_replacing(image)? {
        None => {}
        Some(banger_store::Replaced::Deleted(old)) => {
            remove_files(d, &old);
            tracing::info!(image = %image.name, old = %old.id, "image replaced; the old one, unused, deleted");
        }
        Some(banger_store::Replaced::Retired { image: old, name }) => {
            tracing::info!(image = %image.name, old = %old.id, retired = %name, "image replaced; the old one, in use, retired");
        }
    }
    Ok(())
}

/// An operation's record stage: unless the operation was cancelled, `image` is recorded (see
/// [`record`]); when it is not, its directory `dir` goes too, so no image is left on disk
/// without its record.
pub fn record_stage(
    d: &Daemon,
    cx: &OperationContext,
    image: &Image,
    dir: &Path,
    replace: bool,
) -> Result<(), ApiError> {
    cx.begin(RECORD_STAGE);
    if let Err(e) = cx
        .check_cancelled()
        .and_then(|()| record(d, image, replace))
    {
        if let Err(rm) = std::fs::remove_dir_all(dir) {
            tracing::error!(dir = %dir.display(), error = %rm, "cannot remove an unrecorded image");
        }
        return Err(e);
    }
    cx.done(RECORD_STAGE, None);
    Ok(())
}

/// Deletes the retired images no VM or snapshot uses any more (after a VM or snapshot
/// delete, and when the daemon starts). Failures are logged: the next call tries again.
pub fn collect_retired(d: &Daemon) {
    let unused = match d.store.unused_retired_images() {
        Ok(unused) => unused,
        Err(e) => {
            tracing::error!(error = %e, "cannot list retired images");
            return;
        }
    };
    for image in unused {
        // Refused, and kept, if a VM of it was made since.
        match d.store.delete_image(&image.id) {
            Ok(()) => {
                remove_files(d, &image);
                tracing::info!(image = %image.name, id = %image.id, "retired image deleted: nothing uses it any more");
            }
            Err(e) => tracing::info!(image = %image.name, error = %e, "retired image kept"),
        }
    }
}

/// Removes a deleted image's files.
fn remove_files(d: &Daemon, image: &Image) {
    d.disks.forget_image(&image.id);
    let dir = d.paths.image_dir(&image.id);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(dir = %dir.display(), error = %e, "cannot remove a deleted image's files");
    }
}

/// Checks a registration request. Runs on the blocking pool (it reads file headers).
pub fn check_register(
    d: &Daemon,
    req: &RegisterImageRequest,
) -> Result<register::CheckedSources, ApiError> {
    check_new_name(d, &req.name)?;
    let publish = banger_api::validate::image_ports(&req.publish)?;
    let mut sources = register::check_sources(&req.kernel, req.initrd.as_deref(), &req.rootfs)
        .map_err(ToApi::to_api)?;
    sources.publish = publish;
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
    ops.spawn(
        OperationKind::RegisterImage,
        &name.clone(),
        &stages,
        move |cx| {
            let id = format!("{:016x}", rand::random::<u64>());
            let dir = d.paths.image_dir(&id);
            let image = register::install(
                &id,
                &name,
                &sources,
                &dir,
                &OpReporter(cx),
                &mut banger_host::disk::copy_file,
            )
            .map_err(ToApi::to_api)?;
            record_stage(&d, cx, &image, &dir, false)?;
            tracing::info!(image = %image.name, id = %image.id, "image registered");
            serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
        },
    )
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
        let code = crate::doctor::refusal_code([&failed]);
        let error = ApiError::new(code, failed.detail);
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
            .map_err(ToApi::to_api)?;
        record_stage(&d, cx, &image, &dir, false)?;
        tracing::info!(image = %image.name, id = %image.id, suite = %checked.suite, "image bootstrapped");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

/// An export request, checked: the image and where its file goes.
#[derive(Debug, Clone)]
pub struct CheckedExport {
    pub image: Image,
    pub path: PathBuf,
    pub replace: bool,
}

/// Checks an export request: the image exists, the path is absolute, its directory exists,
/// and it names no existing file unless `force`.
pub fn check_export(
    d: &Daemon,
    name: &str,
    req: &ExportImageRequest,
) -> Result<CheckedExport, ApiError> {
    let image = find(d, name)?;
    let path = absolute_path(&req.path)?;
    let replace = req.force.unwrap_or(false);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(
                ApiError::invalid(format!("{} is a directory", path.display()))
                    .with_hint("name the file to write, e.g. DIR/NAME.banger-image"),
            );
        }
        Ok(_) if !replace => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("{} already exists", path.display()),
            )
            .with_hint("pick another file name, or pass --force to replace it"));
        }
        _ => {}
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !parent.is_dir() {
        return Err(
            ApiError::invalid(format!("directory {} does not exist", parent.display()))
                .with_hint("create the directory first, or write the file elsewhere"),
        );
    }
    Ok(CheckedExport {
        image,
        path,
        replace,
    })
}

/// Starts the export operation of a checked request.
pub fn start_export(d: Arc<Daemon>, checked: CheckedExport) -> Operation {
    let ops = d.ops.clone();
    let target = checked.image.name.clone();
    ops.spawn(
        OperationKind::ExportImage,
        &target,
        &archive::EXPORT_STAGES,
        move |cx| {
            let image = &checked.image;
            let exported = archive::export(
                image,
                &d.paths.image_dir(&image.id),
                &checked.path,
                checked.replace,
                &OpReporter(cx),
            )
            .map_err(ToApi::to_api)?;
            tracing::info!(image = %image.name, path = %exported.path.display(), bytes = exported.bytes, "image exported");
            let result = ExportedImage {
                name: image.name.clone(),
                id: image.id.clone(),
                path: exported.path.display().to_string(),
                bytes: exported.bytes,
            };
            serde_json::to_value(&result).map_err(|e| ApiError::internal(e.to_string()))
        },
    )
}

/// An import request, checked: the file is an image archive this banger reads, and the name
/// it will have is free.
#[derive(Debug, Clone)]
pub struct CheckedImport {
    pub name: String,
    pub path: PathBuf,
}

/// Checks an import request. Reads the archive's label and manifest (the first few KiB), so
/// a foreign file, one from a newer banger, or a taken name is refused before anything starts.
pub fn check_import(d: &Daemon, req: &ImportImageRequest) -> Result<CheckedImport, ApiError> {
    if let Some(name) = &req.name {
        validate::name("image", name)?;
    }
    let path = absolute_path(&req.path)?;
    if !path.exists() {
        return Err(
            ApiError::invalid(format!("{} does not exist", path.display()))
                .with_hint("pass the file `banger image export` wrote"),
        );
    }
    let head = archive::read_head(&path).map_err(ToApi::to_api)?;
    let name = match &req.name {
        Some(name) => name.clone(),
        None => {
            let name = head.label.name;
            validate::name("image", &name).map_err(|e| {
                ApiError::invalid(format!(
                    "the archive's image name is invalid: {}",
                    e.message
                ))
                .with_hint("import it under another name with --name NAME")
            })?;
            name
        }
    };
    if d.store.find_image(&name)?.is_some() {
        let hint = match &req.name {
            Some(_) => format!(
                "pick another --name, or delete the old image with `banger image delete {name}`"
            ),
            None => format!(
                "import it under another name with --name NAME, or delete the old image with \
                 `banger image delete {name}`"
            ),
        };
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("an image named {name:?} already exists"),
        )
        .with_hint(hint));
    }
    Ok(CheckedImport { name, path })
}

/// Starts the import operation of a checked request.
pub fn start_import(d: Arc<Daemon>, checked: CheckedImport) -> Operation {
    let mut stages: Vec<&str> = archive::IMPORT_STAGES.to_vec();
    stages.push(RECORD_STAGE);
    let ops = d.ops.clone();
    let target = checked.name.clone();
    ops.spawn(OperationKind::ImportImage, &target, &stages, move |cx| {
        let id = format!("{:016x}", rand::random::<u64>());
        let dir = d.paths.image_dir(&id);
        let image = archive::import(&id, &checked.name, &checked.path, &dir, &OpReporter(cx))
            .map_err(ToApi::to_api)?;
        record_stage(&d, cx, &image, &dir, false)?;
        tracing::info!(image = %image.name, id = %image.id, from = %checked.path.display(), "image imported");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

/// A path the daemon can use as given: bangerd runs in another directory than the client.
fn absolute_path(path: &str) -> Result<PathBuf, ApiError> {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(ApiError::invalid(format!("path {path:?} is not absolute"))
            .with_hint("bangerd runs in another directory; pass an absolute path"))
    }
}

pub struct OpReporter<'a>(pub &'a OperationContext);

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
    // The warm pool's hidden VMs and template of the image are no reason to refuse.
    crate::warm::drain_image(d, &image);
    d.store.delete_image(&image.id)?;
    remove_files(d, &image);
    tracing::info!(image = %image.name, id = %image.id, "image deleted");
    Ok(image)
}
