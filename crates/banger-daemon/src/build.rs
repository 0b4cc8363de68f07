//! `POST /v1/images/build`: a new image from a recipe, as an operation. A temporary VM of the
//! base image boots (an ordinary VM, on whatever VMM the host runs), is provisioned through
//! its guest agent (packages the host downloaded, files, downloads, scripts, services), shuts
//! down, and its root becomes the new image by the same promotion `image promote` uses (its
//! work disk becoming the image's work seed). The temporary VM is deleted whatever happens.
//!
//! A build's inputs (base image, recipe, the contents of the host files it names) have a key;
//! a finished build is kept in the cache under it as an image archive, and a build of the
//! same inputs unpacks that instead of booting anything.
//!
//! It stays one file: it is one operation, its stages in the order they run, sharing the build VM
//! and the guest it provisions.

use crate::api_error::ToApi;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_agent_protocol::client::AgentError;
use banger_agent_protocol::protocol::ExecRequest;
use banger_api::recipe::{self, DEFAULT_BUILD_DISK, DEFAULT_BUILD_MEMORY_MIB};
use banger_api::{
    ApiError, BuildImageRequest, CreateVmRequest, ErrorCode, Image, ImageSource, Operation,
    OperationKind, Recipe, ServiceCheck, Vm, validate,
};
use banger_host::runner::RealRunner;
use banger_image::archive;
use banger_image::bootstrap::guest;
use banger_image::build::{self as host_build, Apt, ArchiveEntry, EntrySource};
use banger_image::promote::{PromoteSpec, STAGING_PREFIX};

use crate::Daemon;
use crate::image::{RECORD_STAGE, check_name};
use crate::operation::OperationContext;

const S_CACHE: &str = "check cache";
const S_PACKAGES: &str = "fetch packages";
const S_DOWNLOADS: &str = "fetch downloads";
const S_BOOT: &str = "boot";
const S_INSTALL: &str = "install packages";
const S_FILES: &str = "copy files";
const S_RUN: &str = "run scripts";
const S_SERVICES: &str = "set up services";
const S_SHUTDOWN: &str = "shut down";
const S_CACHED: &str = "unpack cached image";
const S_SAVE: &str = "save to cache";

/// How long one provisioning step (an install, a script) may run in the guest.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the build VM may take to boot and answer.
const BOOT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Where the guest gets the build's files before they are put in place.
const GUEST_STAGING: &str = "/var/cache/banger-build";
/// Lines of a failed step's output the error shows.
const OUTPUT_LINES: usize = 20;

/// A build request, checked.
#[derive(Debug, Clone)]
pub struct CheckedBuild {
    pub recipe: Recipe,
    pub name: String,
    pub base: Image,
    pub no_cache: bool,
    pub download_only: bool,
    /// The image takes its name from an image that holds it (see [`crate::image::record`]).
    pub replace: bool,
}

/// Checks a build request: the recipe, a new name, the base image, the host files.
pub fn check(d: &Daemon, req: &BuildImageRequest) -> Result<CheckedBuild, ApiError> {
    let recipe = &req.recipe;
    recipe.check()?;
    guest::validate_services(&service_checks(recipe)?)
        .map_err(|e| ApiError::invalid(e).with_hint("fix the recipe's [[service]] entries"))?;
    let name = recipe.name.clone().ok_or_else(|| {
        ApiError::invalid("the recipe names no image")
            .with_hint("give the image a name: name = \"...\" in the recipe, or --name")
    })?;
    let replace = req.replace.unwrap_or(false);
    // Downloading makes no image: its name may be any image's.
    if req.download_only != Some(true) {
        check_name(d, &name, replace)?;
    }
    let base_name = recipe.base.as_deref().unwrap_or(&d.config.default_image);
    let base = d.store.find_image(base_name)?.ok_or_else(|| {
        ApiError::invalid(format!("unknown base image {base_name:?}"))
            .with_hint("list images with `banger image list`, or bootstrap one with `banger image bootstrap debian`")
    })?;
    if !recipe.packages.is_empty() {
        Apt::for_image(&RealRunner, Path::new("/"), &base).map_err(ToApi::to_api)?;
    }
    let readable = |what: &str, path: &str| -> Result<(), ApiError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            ApiError::invalid(format!("{what} {path} cannot be read: {e}")).with_hint(
                "fix the path in the recipe (relative paths are from the recipe's directory)",
            )
        })?;
        if !meta.is_file() {
            return Err(ApiError::invalid(format!(
                "{what} {path} is not a regular file"
            )));
        }
        std::fs::File::open(path)
            .map(drop)
            .map_err(|e| ApiError::invalid(format!("{what} {path} cannot be read: {e}")))
    };
    for file in &recipe.files {
        readable("file", &file.src)?;
    }
    for script in recipe.run.iter().filter_map(|r| r.script.as_deref()) {
        readable("script", script)?;
    }
    Ok(CheckedBuild {
        recipe: recipe.clone(),
        name,
        base,
        no_cache: req.no_cache.unwrap_or(false),
        download_only: req.download_only.unwrap_or(false),
        replace,
    })
}

/// The stages of a build, as the operation lists them.
pub fn stages() -> Vec<&'static str> {
    let mut stages = vec![
        S_CACHE,
        S_PACKAGES,
        S_DOWNLOADS,
        S_BOOT,
        S_INSTALL,
        S_FILES,
        S_RUN,
        S_SERVICES,
        S_SHUTDOWN,
    ];
    stages.extend(crate::promote::stages());
    stages.retain(|s| *s != RECORD_STAGE);
    stages.extend([S_CACHED, RECORD_STAGE, S_SAVE]);
    stages
}

/// Starts the build operation of a checked request.
pub fn start(d: Arc<Daemon>, checked: CheckedBuild) -> Operation {
    let ops = d.ops.clone();
    let target = checked.name.clone();
    ops.spawn(OperationKind::BuildImage, &target, &stages(), move |cx| {
        if checked.download_only {
            download_only(&d, cx, &checked)?;
            return Ok(serde_json::Value::Null);
        }
        let image = build(&d, cx, &checked)?;
        tracing::info!(image = %image.name, id = %image.id, base = %checked.base.name, "image built");
        serde_json::to_value(&image).map_err(|e| ApiError::internal(e.to_string()))
    })
}

fn cache_dir(d: &Daemon) -> PathBuf {
    match &d.config.cache_dir {
        Some(dir) => dir.join("build"),
        None => d.paths.state_dir.join("cache/build"),
    }
}

fn build(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    checked: &CheckedBuild,
) -> Result<Image, ApiError> {
    let recipe = &checked.recipe;
    let cache = cache_dir(d);
    cx.begin(S_CACHE);
    let key = host_build::cache_key(&checked.base, recipe, env!("CARGO_PKG_VERSION"))
        .map_err(ToApi::to_api)?;
    let cached = cache.join(format!("{key}{}", archive::SUFFIX));
    if !checked.no_cache && cached.is_file() {
        cx.done(S_CACHE, Some(format!("hit: {key}")));
        for stage in stages() {
            if ![S_CACHE, S_CACHED, RECORD_STAGE, S_SAVE].contains(&stage) {
                cx.skip(stage, "cached");
            }
        }
        return from_cache(d, cx, checked, &cached);
    }
    cx.done(
        S_CACHE,
        Some(if checked.no_cache {
            "not used (--no-cache)".to_owned()
        } else {
            format!("miss: {key}")
        }),
    );

    let staging_parent = d.paths.state_dir.join("staging");
    std::fs::create_dir_all(&staging_parent).map_err(|e| {
        ApiError::internal(format!("cannot create {}: {e}", staging_parent.display()))
    })?;
    let staging = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}build-"))
        .tempdir_in(&staging_parent)
        .map_err(|e| ApiError::internal(format!("cannot stage the build: {e}")))?;

    // Everything the guest is handed is fetched before anything boots.
    let debs = fetch_packages(d, cx, checked, &cache)?;
    let downloads = fetch_downloads(cx, recipe, &cache)?;

    cx.begin(S_BOOT);
    let vm = BuildVm::create(d, cx, checked)?;
    let image = provision_and_promote(d, cx, checked, &vm.vm, &debs, &downloads, staging.path());
    drop(vm);
    let image = image?;

    if d.config.build_cache_max == 0 {
        cx.skip(S_SAVE, "not kept (build_cache_max = 0)");
        return Ok(image);
    }
    cx.begin(S_SAVE);
    match save_to_cache(d, cx, &image, &cache, &cached) {
        Ok(bytes) => {
            let pruned = prune_cache(d, &cache, &cached);
            cx.done(
                S_SAVE,
                Some(match pruned {
                    0 => validate::format_size(bytes),
                    n => format!(
                        "{}; {n} build(s) used longest ago removed to stay within {}",
                        validate::format_size(bytes),
                        validate::format_size(d.config.build_cache_max)
                    ),
                }),
            )
        }
        // The image is made; a cache that cannot be written only costs the next build.
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot keep the build in the cache");
            cx.skip(S_SAVE, &e.message);
        }
    }
    Ok(image)
}

/// `download_only`: the fetch stages, every other stage skipped.
fn download_only(
    d: &Daemon,
    cx: &OperationContext,
    checked: &CheckedBuild,
) -> Result<(), ApiError> {
    let cache = cache_dir(d);
    cx.skip(S_CACHE, "downloads only");
    fetch_packages(d, cx, checked, &cache)?;
    fetch_downloads(cx, &checked.recipe, &cache)?;
    for stage in stages() {
        if ![S_CACHE, S_PACKAGES, S_DOWNLOADS].contains(&stage) {
            cx.skip(stage, "downloads only");
        }
    }
    tracing::info!(image = %checked.name, "downloaded what a build needs");
    Ok(())
}

fn fetch_packages(
    d: &Daemon,
    cx: &OperationContext,
    checked: &CheckedBuild,
    cache: &Path,
) -> Result<Vec<PathBuf>, ApiError> {
    let recipe = &checked.recipe;
    if recipe.packages.is_empty() {
        cx.skip(S_PACKAGES, "the recipe installs no packages");
        return Ok(Vec::new());
    }
    cx.begin(S_PACKAGES);
    let cancelled = || cx.cancelled();
    let apt = Apt::for_image(&RealRunner, cache, &checked.base).map_err(ToApi::to_api)?;
    let status = host_build::base_dpkg_status(&RealRunner, &d.paths.image_dir(&checked.base.id))
        .map_err(ToApi::to_api)?;
    apt.prepare(&status, &cancelled).map_err(ToApi::to_api)?;
    let mut packages = recipe.packages.clone();
    let mut plan = apt.plan(&packages, &cancelled).map_err(ToApi::to_api)?;
    // DKMS builds modules for the image's kernel only with that kernel's headers.
    let headers = host_build::kernel_headers_needed(
        &packages,
        &plan,
        checked.base.manifest.kernel_version.as_deref(),
    );
    if let Some(headers) = &headers {
        tracing::info!(%headers, "the packages build kernel modules: adding the image kernel's headers");
        packages.push(headers.clone());
        plan = apt.plan(&packages, &cancelled).map_err(ToApi::to_api)?;
    }
    if plan.is_empty() {
        cx.done(S_PACKAGES, Some("the base image has them all".into()));
        return Ok(Vec::new());
    }
    let debs = apt
        .download(&packages, &plan, &cancelled)
        .map_err(ToApi::to_api)?;
    let bytes: u64 = debs
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    cx.done(
        S_PACKAGES,
        Some(format!(
            "{} packages, {}{}",
            debs.len(),
            validate::format_size(bytes),
            match &headers {
                Some(headers) => format!(" ({headers} for DKMS included)"),
                None => String::new(),
            }
        )),
    );
    Ok(debs)
}

fn fetch_downloads(
    cx: &OperationContext,
    recipe: &Recipe,
    cache: &Path,
) -> Result<Vec<PathBuf>, ApiError> {
    if recipe.downloads.is_empty() {
        cx.skip(S_DOWNLOADS, "the recipe downloads nothing");
        return Ok(Vec::new());
    }
    cx.begin(S_DOWNLOADS);
    let mut paths = Vec::new();
    let mut hits = 0;
    for download in &recipe.downloads {
        let (path, hit) =
            host_build::download(&RealRunner, cache, &download.url, &download.sha256, &|| {
                cx.cancelled()
            })
            .map_err(ToApi::to_api)?;
        hits += usize::from(hit);
        paths.push(path);
    }
    cx.done(
        S_DOWNLOADS,
        Some(format!("{} files, {hits} from the cache", paths.len())),
    );
    Ok(paths)
}

/// The temporary VM: deleted when dropped, whatever state it is in.
struct BuildVm<'a> {
    d: &'a Arc<Daemon>,
    vm: Vm,
}

impl<'a> BuildVm<'a> {
    fn create(
        d: &'a Arc<Daemon>,
        cx: &OperationContext,
        checked: &CheckedBuild,
    ) -> Result<BuildVm<'a>, ApiError> {
        let recipe = &checked.recipe;
        let mut name = format!("build-{}", checked.name);
        name.truncate(58);
        let name = format!(
            "{}-{:04x}",
            name.trim_end_matches('-'),
            rand::random::<u16>()
        );
        let disk = validate::parse_size(recipe.disk.as_deref().unwrap_or(DEFAULT_BUILD_DISK))?;
        let memory = recipe
            .memory_mib
            .unwrap_or(DEFAULT_BUILD_MEMORY_MIB.max(d.config.defaults.memory_mib));
        let created = crate::vm::create(
            d,
            CreateVmRequest {
                name: Some(name),
                image: Some(checked.base.id.clone()),
                memory_mib: Some(i64::from(memory)),
                disk_bytes: Some(i64::try_from(disk).unwrap_or(i64::MAX)),
                nat: Some(recipe.nat),
                start: Some(true),
                ..CreateVmRequest::default()
            },
        )?;
        let vm = BuildVm { d, vm: created.vm };
        // A daemon killed from here on leaves a VM the next one deletes (`sweep`).
        let marker = d.paths.vm_dir(&vm.vm.id).join(BUILD_MARKER);
        if let Err(e) = std::fs::write(&marker, b"") {
            return Err(ApiError::internal(format!(
                "cannot mark the build VM {}: {}: {e}",
                vm.vm.name,
                marker.display()
            )));
        }
        if let Some(start) = created.operation {
            let deadline = Instant::now() + BOOT_TIMEOUT;
            loop {
                let op = d.ops.get(&start.id);
                match op {
                    Some(op) if op.state.is_finished() => {
                        if let Some(error) = op.error {
                            let mut e = ApiError::new(
                                error.code,
                                format!("the build VM did not start: {}", error.message),
                            );
                            e.hint = error.hint;
                            return Err(e);
                        }
                        break;
                    }
                    None => break,
                    Some(_) => {}
                }
                if cx.cancelled() {
                    d.ops.cancel(&start.id);
                    return Err(cancelled());
                }
                if Instant::now() >= deadline {
                    d.ops.cancel(&start.id);
                    return Err(ApiError::new(
                        ErrorCode::Unavailable,
                        format!(
                            "the build VM {} was not ready within {}",
                            vm.vm.name,
                            humantime::format_duration(BOOT_TIMEOUT)
                        ),
                    )
                    .with_hint(format!("`banger vm logs {}` shows its console", vm.vm.name)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut vm = vm;
        vm.vm = crate::vm::find(d, &vm.vm.id)?;
        // Provisioning goes through the agent: a base image that does not declare it (the
        // start did not wait for it) is waited for here.
        let declared = checked
            .base
            .manifest
            .services
            .iter()
            .any(|s| s.name == guest::AGENT_SERVICE);
        if !declared {
            let agent = crate::machine::guest::agent(d, &vm.vm)?;
            let deadline = Instant::now() + BOOT_TIMEOUT;
            let answered = d.machines.block_on(async {
                loop {
                    if agent.health().await.is_ok() {
                        return Ok(());
                    }
                    if cx.cancelled() {
                        return Err(cancelled());
                    }
                    if Instant::now() >= deadline {
                        return Err(ApiError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "the build VM's guest agent did not answer within {}",
                                humantime::format_duration(BOOT_TIMEOUT)
                            ),
                        )
                        .with_hint(
                            "a build provisions through banger's guest agent: build on an image \
                             that has it (a bootstrapped, built or promoted one)",
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            answered?;
        }
        // The VMM the VM runs on (the configured one may be `auto`).
        let vmm = vm
            .vm
            .runtime
            .as_ref()
            .map_or(vm.vm.vmm.to_string(), |r| r.vmm.to_string());
        cx.done(S_BOOT, Some(format!("VM {} on {vmm}", vm.vm.name)));
        Ok(vm)
    }
}

impl Drop for BuildVm<'_> {
    fn drop(&mut self) {
        remove_build_vm(self.d, &self.vm.id);
    }
}

/// Marks a VM's directory as a build's: a daemon that restarts deletes such VMs (a build does
/// not survive its daemon).
const BUILD_MARKER: &str = ".image-build";

/// Deletes a build VM once no start or stop is in progress on it (a cancelled start rolls
/// back first).
fn remove_build_vm(d: &Daemon, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match crate::vm::find(d, id) {
            Ok(vm)
                if matches!(
                    vm.state,
                    banger_api::VmState::Starting | banger_api::VmState::Stopping
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(vm) => {
                if let Err(e) = crate::vm::delete(d, &vm.id) {
                    tracing::error!(vm = %vm.name, error = %e.message, "cannot delete a build VM");
                }
                return;
            }
            // Already gone.
            Err(_) => return,
        }
    }
}

/// Deletes what bootstraps, builds and promotions a previous daemon did not finish left: their
/// staging, and the VMs of builds. Runs at start-up, before any request, when none runs.
pub fn sweep(d: &Daemon) {
    let host = banger_image::bootstrap::Host::new(
        &RealRunner,
        cache_dir(d),
        d.paths.state_dir.join("staging"),
    );
    // Nothing runs yet: all of the staging is what interrupted work left.
    match banger_image::bootstrap::remove_all_staging(&host) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(
                ?removed,
                "removed the staging of interrupted bootstraps, builds and promotions"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove an interrupted operation's staging"),
    }
    let Ok(vms) = d.store.list_vms() else {
        return;
    };
    for vm in vms {
        if d.paths.vm_dir(&vm.id).join(BUILD_MARKER).exists() {
            tracing::info!(vm = %vm.name, "deleting the VM of an interrupted image build");
            remove_build_vm(d, &vm.id);
        }
    }
}

fn cancelled() -> ApiError {
    ApiError::new(ErrorCode::Cancelled, "the build was cancelled")
}

fn provision_and_promote(
    d: &Arc<Daemon>,
    cx: &OperationContext,
    checked: &CheckedBuild,
    vm: &Vm,
    debs: &[PathBuf],
    downloads: &[PathBuf],
    staging: &Path,
) -> Result<Image, ApiError> {
    let recipe = &checked.recipe;
    let guest = Guest { d, cx, vm, staging };

    if debs.is_empty() {
        cx.skip(S_INSTALL, "nothing to install");
    } else {
        cx.begin(S_INSTALL);
        let entries: Vec<ArchiveEntry> = debs
            .iter()
            .map(|deb| ArchiveEntry {
                source: EntrySource::File(deb.clone()),
                dest: format!(
                    "{GUEST_STAGING}/debs/{}",
                    deb.file_name().unwrap_or_default().to_string_lossy()
                ),
                mode: Some(0o644),
            })
            .collect();
        guest.copy_in(S_INSTALL, &entries)?;
        guest.run(
            S_INSTALL,
            "installing the packages",
            &install_script(),
            STEP_TIMEOUT,
        )?;
        cx.done(S_INSTALL, Some(format!("{} packages", debs.len())));
    }

    let mut entries: Vec<ArchiveEntry> = recipe
        .files
        .iter()
        .map(|f| ArchiveEntry {
            source: EntrySource::File(PathBuf::from(&f.src)),
            dest: f.dest.clone(),
            mode: f
                .mode
                .as_deref()
                .map(recipe::parse_mode)
                .transpose()
                .ok()
                .flatten(),
        })
        .collect();
    entries.extend(recipe.downloads.iter().zip(downloads).map(|(dl, path)| {
        ArchiveEntry {
            source: EntrySource::File(path.clone()),
            dest: dl.dest.clone(),
            mode: Some(
                dl.mode
                    .as_deref()
                    .map(recipe::parse_mode)
                    .transpose()
                    .ok()
                    .flatten()
                    .unwrap_or(0o644),
            ),
        }
    }));
    if entries.is_empty() {
        cx.skip(S_FILES, "the recipe copies no files");
    } else {
        cx.begin(S_FILES);
        guest.copy_in(S_FILES, &entries)?;
        cx.done(S_FILES, Some(format!("{} files", entries.len())));
    }

    if recipe.run.is_empty() {
        cx.skip(S_RUN, "the recipe runs no scripts");
    } else {
        cx.begin(S_RUN);
        for (i, run) in recipe.run.iter().enumerate() {
            let (what, script) = match (&run.script, &run.command) {
                (Some(path), _) => (
                    format!("script {path}"),
                    std::fs::read_to_string(path).map_err(|e| {
                        ApiError::invalid(format!("cannot read script {path}: {e}"))
                    })?,
                ),
                (None, Some(command)) => (format!("command {command:?}"), command.clone()),
                (None, None) => continue,
            };
            guest.run_script(S_RUN, &what, &script, STEP_TIMEOUT)?;
            cx.progress(S_RUN, i as u64 + 1, recipe.run.len() as u64, "scripts");
        }
        cx.done(S_RUN, Some(format!("{} scripts", recipe.run.len())));
    }

    let services = service_checks(recipe)?;
    if recipe.services.is_empty() {
        cx.skip(S_SERVICES, "the recipe declares no services");
    } else {
        cx.begin(S_SERVICES);
        let mut entries = vec![service_runner_entry()];
        for service in &recipe.services {
            entries.push(ArchiveEntry {
                source: EntrySource::Bytes(
                    guest::service_script(&service.name, &service.command).into_bytes(),
                ),
                dest: format!("/{}/{}", guest::SERVICES_DIR, service.name),
                mode: Some(0o755),
            });
        }
        guest.copy_in(S_SERVICES, &entries)?;
        let lines: String = services.iter().map(guest::service_inittab_line).collect();
        let script = format!(
            "set -e\nfor name in {names}; do sed -i \"\\#banger-service $name #d\" /etc/inittab; done\n\
             cat >>/etc/inittab <<'BANGER_EOF'\n{lines}BANGER_EOF\n",
            names = recipe
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        );
        guest.run(
            S_SERVICES,
            "adding the services to /etc/inittab",
            &script,
            STEP_TIMEOUT,
        )?;
        cx.done(
            S_SERVICES,
            Some(
                recipe
                    .services
                    .iter()
                    .map(|s| format!("{} on {}", s.name, s.port))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        );
    }

    cx.begin(S_SHUTDOWN);
    guest.run(
        S_SHUTDOWN,
        "flushing the guest's disks",
        &format!("rm -rf {GUEST_STAGING}; sync"),
        Duration::from_secs(120),
    )?;
    let (stopped, how) = crate::machine::stop_for_build(d, vm)?;
    cx.done(S_SHUTDOWN, Some(how.into()));

    let spec = PromoteSpec {
        name: checked.name.clone(),
        source: ImageSource::Built,
        created_from: format!("image build on {} ({})", checked.base.name, checked.base.id),
        services,
        publish: recipe.published_ports(),
        recipe: serde_json::to_value(recipe).ok(),
    };
    cx.skip(S_CACHED, "built");
    crate::promote::run(d, cx, &stopped, &checked.base, true, checked.replace, &spec)
}

/// The services of the recipe as the image declares them.
fn service_checks(recipe: &Recipe) -> Result<Vec<ServiceCheck>, ApiError> {
    recipe
        .services
        .iter()
        .map(|s| {
            Ok(ServiceCheck {
                name: s.name.clone(),
                port: s.port,
                timeout_secs: s
                    .timeout
                    .as_deref()
                    .map(recipe::service_timeout)
                    .transpose()?,
                http: s.http.clone(),
            })
        })
        .collect()
}

fn service_runner_entry() -> ArchiveEntry {
    let runner = guest::service_runner();
    let (path, contents, mode) = match runner {
        guest::GuestFile::File {
            path,
            mode,
            contents,
        } => (path, contents, mode),
        guest::GuestFile::Symlink { path, .. } => (path, String::new(), 0o755),
    };
    ArchiveEntry {
        source: EntrySource::Bytes(contents.into_bytes()),
        dest: format!("/{path}"),
        mode: Some(mode),
    }
}

/// Installs the handed-in packages with the guest's own apt, from those files alone. No
/// service starts while they install (`policy-rc.d`): the image's init starts what it runs.
fn install_script() -> String {
    format!(
        "set -e\nexport DEBIAN_FRONTEND=noninteractive\n\
         printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d\nchmod 755 /usr/sbin/policy-rc.d\n\
         trap 'rm -f /usr/sbin/policy-rc.d' EXIT\n\
         apt-get install -y --no-install-recommends \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
         {GUEST_STAGING}/debs/*.deb\nrm -rf {GUEST_STAGING}/debs\n"
    )
}

/// The build VM's guest, through its agent.
struct Guest<'a> {
    d: &'a Daemon,
    cx: &'a OperationContext,
    vm: &'a Vm,
    staging: &'a Path,
}

impl Guest<'_> {
    fn copy_in(&self, stage: &str, entries: &[ArchiveEntry]) -> Result<(), ApiError> {
        let tar = self.staging.join("files.tar");
        host_build::write_archive(entries, &tar).map_err(ToApi::to_api)?;
        let agent = crate::machine::guest::agent(self.d, self.vm)?;
        let copied = self.d.machines.block_on(async {
            let file = tokio::fs::File::open(&tar)
                .await
                .map_err(|e| ApiError::internal(format!("cannot read {}: {e}", tar.display())))?;
            agent
                .copy_in("/", file)
                .await
                .map_err(|e| step_error(stage, "copying files into the build VM", &e, ""))
        });
        let _ = std::fs::remove_file(&tar);
        copied.map(drop)
    }

    /// Runs a recipe script: a file that starts with `#!` runs as itself.
    fn run_script(
        &self,
        stage: &str,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        if script.starts_with("#!") {
            let path = format!("{GUEST_STAGING}/script");
            self.copy_in(
                stage,
                &[ArchiveEntry {
                    source: EntrySource::Bytes(script.as_bytes().to_vec()),
                    dest: path.clone(),
                    mode: Some(0o700),
                }],
            )?;
            self.exec(stage, what, ExecRequest::new([path]), timeout)
        } else {
            self.run(stage, what, script, timeout)
        }
    }

    /// Runs `script` with `sh -e`.
    fn run(
        &self,
        stage: &str,
        what: &str,
        script: &str,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        self.exec(
            stage,
            what,
            ExecRequest::new(["sh", "-ec", script]),
            timeout,
        )
    }

    fn exec(
        &self,
        stage: &str,
        what: &str,
        mut request: ExecRequest,
        timeout: Duration,
    ) -> Result<(), ApiError> {
        request
            .env
            .insert("DEBIAN_FRONTEND".into(), "noninteractive".into());
        let agent = crate::machine::guest::agent(self.d, self.vm)?;
        let cx = self.cx;
        let outcome = self.d.machines.block_on(async {
            let run = agent.exec_output(&request, None);
            let watch = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if cx.cancelled() {
                        return;
                    }
                }
            };
            tokio::select! {
                out = tokio::time::timeout(timeout, run) => Some(out),
                () = watch => None,
            }
        });
        let output = match outcome {
            None => return Err(cancelled()),
            Some(Err(_)) => {
                return Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "{stage}: {what} did not finish within {}",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
            Some(Ok(Err(e))) => return Err(step_error(stage, what, &e, "")),
            Some(Ok(Ok(output))) => output,
        };
        if output.status.success() {
            return Ok(());
        }
        let mut combined = String::from_utf8_lossy(&output.stdout).into_owned();
        combined.push_str(&String::from_utf8_lossy(&output.stderr));
        let tail: Vec<&str> = combined.lines().rev().take(OUTPUT_LINES).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "{stage}: {what} exited with {}; its last output:\n{}",
                output.status.shell_code(),
                tail.join("\n")
            ),
        )
        .with_hint("fix the recipe and build again; nothing of this build was kept"))
    }
}

fn step_error(stage: &str, what: &str, e: &AgentError, extra: &str) -> ApiError {
    let mut error = ApiError::new(
        ErrorCode::Unavailable,
        format!("{stage}: {what} failed: {e}{extra}"),
    );
    error.hint = e.hint().map(str::to_owned);
    error
}

fn from_cache(
    d: &Daemon,
    cx: &OperationContext,
    checked: &CheckedBuild,
    cached: &Path,
) -> Result<Image, ApiError> {
    cx.begin(S_CACHED);
    // Used now: the last entry the cache's limit removes.
    if let Err(e) = host_build::touch_cache_entry(cached) {
        tracing::warn!(entry = %cached.display(), error = %e, "cannot mark a build cache entry used");
    }
    let id = format!("{:016x}", rand::random::<u64>());
    let dir = d.paths.image_dir(&id);
    let mut image =
        archive::import(&id, &checked.name, cached, &dir, &Silent(cx)).map_err(ToApi::to_api)?;
    image.source = ImageSource::Built;
    image.manifest.imported_from = None;
    cx.done(S_CACHED, None);
    crate::image::record_stage(d, cx, &image, &dir, checked.replace)?;
    cx.skip(S_SAVE, "already in the cache");
    Ok(image)
}

/// Keeps the cache within `build_cache_max`; how many entries went. A cache that cannot be
/// pruned is logged, never a failed build.
fn prune_cache(d: &Daemon, cache: &Path, kept: &Path) -> usize {
    match host_build::prune_cache(cache, d.config.build_cache_max, kept) {
        Ok(removed) => {
            for path in &removed {
                tracing::info!(entry = %path.display(), "build cache entry removed (build_cache_max)");
            }
            removed.len()
        }
        Err(e) => {
            tracing::warn!(cache = %cache.display(), error = %e, "cannot prune the build cache");
            0
        }
    }
}

fn save_to_cache(
    d: &Daemon,
    cx: &OperationContext,
    image: &Image,
    cache: &Path,
    cached: &Path,
) -> Result<u64, ApiError> {
    std::fs::create_dir_all(cache)
        .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", cache.display())))?;
    let exported = archive::export(
        image,
        &d.paths.image_dir(&image.id),
        cached,
        true,
        &Silent(cx),
    )
    .map_err(ToApi::to_api)?;
    Ok(exported.bytes)
}

/// Reports a library's own stages as progress of the current stage only.
struct Silent<'a>(&'a OperationContext);

impl banger_image::register::Reporter for Silent<'_> {
    fn begin(&self, _: &str) {}
    fn progress(&self, _: &str, _: u64, _: u64) {}
    fn done(&self, _: &str, _: Option<String>) {}
    fn skip(&self, _: &str, _: &str) {}
    fn cancelled(&self) -> bool {
        self.0.cancelled()
    }
}
