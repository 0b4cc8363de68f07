//! `POST /v1/images/promote`: a stopped VM's root becomes a new image, as an operation. The
//! VM's disks are copied first (reflinked where the filesystem allows) and the image is made
//! from the copies ([`banger_image::promote`]), so the VM is untouched and free to start
//! again as soon as the copies exist. `image build` ends with the same promotion.

use crate::api_error::ToApi;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_api::{
    ApiError, ErrorCode, Image, ImageSource, Operation, OperationKind, PromoteImageRequest, Vm,
    VmState,
};
use banger_host::runner::RealRunner;
use banger_image::bootstrap;
use banger_image::promote::{self, PromoteSources, PromoteSpec};

use crate::Daemon;
use crate::image::{OpReporter, RECORD_STAGE, check_name};
use crate::machine::disks;
use crate::operation::OperationContext;

/// The first stage: the VM's disks are copied.
pub const COPY_STAGE: &str = "copy disks";

/// A promote request, checked.
#[derive(Debug, Clone)]
pub struct CheckedPromote {
    pub vm: Vm,
    pub image: Image,
    pub name: String,
    pub with_work: bool,
    /// The image takes its name from an image that holds it (see [`crate::image::record`]).
    pub replace: bool,
}

/// Checks a promote request: a new image name, and a VM that exists and is stopped.
pub fn check(d: &Daemon, req: &PromoteImageRequest) -> Result<CheckedPromote, ApiError> {
    let replace = req.replace.unwrap_or(false);
    check_name(d, &req.name, replace)?;
    let vm = crate::vm::find(d, &req.vm)?;
    check_stopped(&vm)?;
    let image = d.store.find_image(&vm.image.id)?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "VM {:?}'s image {} no longer exists",
                vm.name, vm.image.name
            ),
        )
    })?;
    Ok(CheckedPromote {
        vm,
        image,
        name: req.name.clone(),
        with_work: req.with_work.unwrap_or(false),
        replace,
    })
}

fn check_stopped(vm: &Vm) -> Result<(), ApiError> {
    if matches!(vm.state, VmState::Stopped | VmState::Failed) {
        return Ok(());
    }
    let hint = match vm.state {
        // Said in parts (`; `): the web console shows those that name no CLI command.
        VmState::Starting | VmState::Stopping => format!(
            "wait for the operation in progress to end, then stop it; `banger vm show {}` \
             shows it",
            vm.name
        ),
        _ => format!(
            "stop it first: its root is consistent only when the guest has shut down; \
             `banger vm stop {}` stops it",
            vm.name
        ),
    };
    Err(ApiError::new(
        ErrorCode::InvalidState,
        format!(
            "VM {:?} is {}; only a stopped VM's root can become an image",
            vm.name, vm.state
        ),
    )
    .with_hint(hint))
}

/// The stages of a promotion, as the operation lists them.
pub fn stages() -> Vec<&'static str> {
    let mut stages = vec![COPY_STAGE];
    stages.extend(promote::STAGES);
    stages.push(RECORD_STAGE);
    stages
}

/// Starts the promote operation of a checked request.
pub fn start(d: Arc<Daemon>, checked: CheckedPromote) -> Operation {
    let ops = d.ops.clone();
    let target = checked.name.clone();
    ops.spawn(OperationKind::PromoteImage, &target, &stages(), move |cx| {
        let spec = PromoteSpec {
            name: checked.name.clone(),
            source: ImageSource::Promoted,
            created_from: format!(
                "VM {} (image {}){}",
                checked.vm.name,
                checked.image.name,
                if checked.with_work {
                    ", its work disk as the work seed"
                } else {
                    ""
                }
            ),
            services: Vec::new(),
            publish: Vec::new(),
            recipe: None,
        };
        let image = run(
            &d,
            cx,
            &checked.vm,
            &checked.image,
            checked.with_work,
            checked.replace,
            &spec,
        )?;
        tracing::info!(image = %image.name, vm = %checked.vm.name, "image promoted");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

/// Copies the VM's disks, makes the image from the copies and records it (replacing an image
/// of its name when `replace`), reporting the stages of [`stages`] on `cx`. On any failure
/// nothing is left: no copy, no image directory, no record.
pub fn run(
    d: &Daemon,
    cx: &OperationContext,
    vm: &Vm,
    image: &Image,
    with_work: bool,
    replace: bool,
    spec: &PromoteSpec,
) -> Result<Image, ApiError> {
    let staging_parent = d.paths.state_dir.join("staging");
    let host = bootstrap::Host::new(
        &RealRunner,
        crate::image::bootstrap_cache_dir(d),
        staging_parent.clone(),
    );
    std::fs::create_dir_all(&staging_parent).map_err(|e| {
        ApiError::internal(format!("cannot create {}: {e}", staging_parent.display()))
    })?;
    let copies = tempfile::Builder::new()
        .prefix(&format!("{}disks-", promote::STAGING_PREFIX))
        .tempdir_in(&staging_parent)
        .map_err(|e| ApiError::internal(format!("cannot stage the VM's disks: {e}")))?;

    cx.begin(COPY_STAGE);
    let vm_dir = d.paths.vm_dir(&vm.id);
    let overlay = copy_disk(cx, &vm_dir, disks::OVERLAY_DISK, copies.path())?;
    let work = if with_work {
        Some(copy_disk(cx, &vm_dir, disks::WORK_DISK, copies.path())?)
    } else {
        None
    };
    // A start that raced the copy may have changed the disks under it.
    let now = crate::vm::find(d, &vm.id)?;
    check_stopped(&now).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidState,
            format!("VM {:?} started while its disks were copied", vm.name),
        )
        .with_hint(e.hint.unwrap_or_default())
    })?;
    cx.done(COPY_STAGE, None);

    let id = format!("{:016x}", rand::random::<u64>());
    let dir = d.paths.image_dir(&id);
    let sources = PromoteSources {
        base: image,
        base_dir: &d.paths.image_dir(&image.id),
        overlay: &overlay,
        work: work.as_deref(),
    };
    let made = promote::promote(&id, &sources, spec, &host, &dir, &OpReporter(cx))
        .map_err(ToApi::to_api)?;
    drop(copies);
    crate::image::record_stage(d, cx, &made, &dir, replace)?;
    Ok(made)
}

fn copy_disk(
    cx: &OperationContext,
    vm_dir: &Path,
    name: &str,
    into: &Path,
) -> Result<PathBuf, ApiError> {
    let from = vm_dir.join(name);
    let to = into.join(name);
    banger_host::disk::copy_file(&from, &to, &mut |done, total| {
        cx.progress(COPY_STAGE, done, total, "bytes");
        if cx.cancelled() {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .map_err(|e| {
        if cx.cancelled() {
            ApiError::new(ErrorCode::Cancelled, "the promotion was cancelled")
        } else {
            // The whole chain: a full disk is told by its cause (`no_space`).
            ApiError::internal(format!(
                "cannot copy {} to {}: {}",
                from.display(),
                to.display(),
                banger_vmm::error_chain(&e)
            ))
        }
    })?;
    Ok(to)
}
