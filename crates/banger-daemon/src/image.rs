//! The image service: registration as an operation (copy into the image store, write the
//! manifest, record), listing, and deletion that refuses while VMs use the image.

use std::sync::Arc;

use banger_api::{
    ApiError, ErrorCode, Image, Operation, OperationKind, RegisterImageRequest, validate,
};
use banger_image::register::{self, Reporter};

use crate::Daemon;
use crate::operation::OperationContext;

/// The last stage of a registration: the store learns about the image.
const RECORD_STAGE: &str = "record";

/// Checks a registration request. Runs on the blocking pool (it reads file headers).
pub fn check_register(
    d: &Daemon,
    req: &RegisterImageRequest,
) -> Result<register::CheckedSources, ApiError> {
    validate::name("image", &req.name)?;
    if d.store.find_image(&req.name)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!("an image named {:?} already exists", req.name),
        )
        .with_hint("pick another --name, or delete the old image with `banger image delete`"));
    }
    register::check_sources(&req.kernel, req.initrd.as_deref(), &req.rootfs)
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
    let dir = d.paths.image_dir(&image.id);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(dir = %dir.display(), error = %e, "cannot remove a deleted image's files");
    }
    tracing::info!(image = %image.name, id = %image.id, "image deleted");
    Ok(image)
}
