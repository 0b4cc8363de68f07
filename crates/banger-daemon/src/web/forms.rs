//! The console's forms: the extractors that give handlers the viewer's session and, for
//! POSTs, a body whose CSRF token has been checked; and the field-by-field checks of the
//! create-VM, register-image, bootstrap, build and promote forms.
//!
//! The field checks exist so that every mistake shows next to its field at once. They use the
//! same rules as the API (`banger_api::validate`, the host's limits, the image format checks),
//! and the services (`crate::vm::create`, `crate::image::check_register`) still check
//! everything again before anything is stored: the form never gets a looser path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use banger_api::{
    ApiError, BootstrapImageRequest, BuildImageRequest, CreateVmRequest, ErrorCode,
    PromoteImageRequest, Recipe, RegisterImageRequest, VmmKind, validate,
};

use super::auth::Session;
use super::privilege::{PrivilegeStatus, Privileges, Problem};
use super::views::{self, Chrome, Field, FormError};
use crate::Daemon;

/// The signed-in browser a request comes from (the guard put its session in the request).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session: Session,
    pub csrf: String,
    /// Whether `sudo -n` runs banger's privileged steps (kept for a few seconds).
    pub privileges: Arc<Privileges>,
}

impl Viewer {
    pub fn chrome(&self, nav: &'static str) -> Chrome {
        Chrome {
            csrf: self.csrf.clone(),
            nav,
            notice: None,
            banner: self.privileges.banner(),
        }
    }
}

impl FromRequestParts<Arc<Daemon>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, d: &Arc<Daemon>) -> Result<Self, Response> {
        let session = parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(views::sign_in_required)?;
        let serving = d.web.serving().ok_or_else(views::sign_in_required)?;
        // A script's fetch (`Sec-Fetch-Dest: empty`: the pages' polls) shows no banner: it takes
        // what is kept rather than run `sudo`.
        let from_script = parts
            .headers
            .get("sec-fetch-dest")
            .is_some_and(|dest| dest.as_bytes() == b"empty");
        let privileges = if from_script {
            d.web.privileges.last()
        } else {
            PrivilegeStatus::current(d).await
        };
        Ok(Viewer {
            csrf: serving.auth.csrf_token(&session),
            session,
            privileges,
        })
    }
}

/// The fields of a submitted form, by name (the first of repeated names wins).
#[derive(Debug, Clone, Default)]
pub struct FormData(HashMap<String, String>);

impl FormData {
    /// The field's value, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", |v| v.trim())
    }
}

impl From<Vec<(String, String)>> for FormData {
    fn from(pairs: Vec<(String, String)>) -> Self {
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        FormData(map)
    }
}

/// A POSTed form from a signed-in browser whose `csrf` field is that session's token.
/// Every state-changing handler takes its input through this extractor.
#[derive(Debug)]
pub struct CsrfForm {
    pub viewer: Viewer,
    pub fields: FormData,
}

impl FromRequest<Arc<Daemon>> for CsrfForm {
    type Rejection = Response;

    async fn from_request(req: Request, d: &Arc<Daemon>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, d).await?;
        let req = Request::from_parts(parts, body);
        let Form(pairs) = Form::<Vec<(String, String)>>::from_request(req, d)
            .await
            .map_err(|rejection| {
                views::refusal(
                    rejection.status(),
                    "Unreadable form",
                    "The console could not read what the browser sent. Reload the page and try \
                     again.",
                )
            })?;
        let fields = FormData::from(pairs);
        let auth = &d.web.serving().ok_or_else(views::sign_in_required)?.auth;
        if !auth.check_csrf(&viewer.session, fields.get("csrf")) {
            tracing::warn!("web console: refused a form without this session's CSRF token");
            return Err(views::refusal(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form does not belong to your current session (it is from an older page, \
                 or from another site). Reload the page and submit it again.",
            ));
        }
        Ok(CsrfForm { viewer, fields })
    }
}

/// Errors by field name; `form` for those about the whole form.
pub type FieldErrors = HashMap<&'static str, ApiError>;

fn field(value: &str, errors: &FieldErrors, name: &str) -> Field {
    let error = errors.get(name);
    Field {
        value: value.to_owned(),
        error: error.map(|e| e.message.clone()),
        hint: error.and_then(|e| views::console_hint(e.hint.as_deref())),
    }
}

fn form_error(errors: &FieldErrors) -> Option<FormError> {
    errors.get("form").map(|e| FormError {
        message: e.message.clone(),
        hint: views::console_hint(e.hint.as_deref()),
    })
}

fn whole_number(label: &str, text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("{label} must be a whole number (got {text:?})")))
}

/// What the create-VM form holds, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmInput {
    pub name: String,
    pub image: String,
    pub vcpus: String,
    pub memory_mib: String,
    pub disk: String,
    pub work_disk: String,
    pub nat: bool,
    pub vmm: String,
    /// "Start after creating" (checked unless the user unticked it).
    pub start: bool,
}

impl VmInput {
    /// The form as first shown: the configured defaults.
    pub fn defaults(d: &Daemon, image: String) -> VmInput {
        let defaults = &d.config.defaults;
        VmInput {
            name: String::new(),
            image,
            vcpus: defaults.vcpus.to_string(),
            memory_mib: defaults.memory_mib.to_string(),
            disk: validate::format_size(defaults.disk_bytes),
            work_disk: validate::format_size(defaults.work_disk_bytes),
            nat: false,
            vmm: d.config.vmm.as_str().to_owned(),
            start: true,
        }
    }

    pub fn from_form(f: &FormData) -> VmInput {
        VmInput {
            name: f.get("name").to_owned(),
            image: f.get("image").to_owned(),
            vcpus: f.get("vcpus").to_owned(),
            memory_mib: f.get("memory_mib").to_owned(),
            disk: f.get("disk").to_owned(),
            work_disk: f.get("work_disk").to_owned(),
            nat: f.get("nat") == "on",
            vmm: f.get("vmm").to_owned(),
            // An unticked box sends nothing.
            start: f.get("start") == "on",
        }
    }

    /// Checks every field; the request for `crate::vm::create` when all are fine.
    pub fn check(&self, d: &Daemon) -> Result<CreateVmRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut note = |field: &'static str, r: Result<(), ApiError>| {
            if let Err(e) = r {
                errors.entry(field).or_insert(e);
            }
        };
        if !self.name.is_empty() {
            note(
                "name",
                validate::name("VM", &self.name).and_then(|()| {
                    match d.store.find_vm(&self.name)? {
                        Some(_) => Err(ApiError::new(
                            ErrorCode::AlreadyExists,
                            format!("a VM named {:?} already exists", self.name),
                        )
                        .with_hint("pick another name")),
                        None => Ok(()),
                    }
                }),
            );
        }
        note(
            "image",
            if self.image.is_empty() {
                Err(ApiError::invalid("choose an image"))
            } else {
                match d.store.find_image(&self.image) {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(ApiError::invalid(format!("unknown image {:?}", self.image))),
                    Err(e) => Err(e.into()),
                }
            },
        );
        let vcpus = whole_number("vCPUs", &self.vcpus).and_then(|v| {
            let v = validate::vcpus(v)?;
            d.host.check_vcpus(v)?;
            Ok(v)
        });
        note("vcpus", vcpus.as_ref().map(|_| ()).map_err(Clone::clone));
        let memory = whole_number("memory", &self.memory_mib).and_then(|m| {
            let m = validate::memory_mib(m)?;
            d.host.check_memory(m)?;
            Ok(m)
        });
        note(
            "memory_mib",
            memory.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let size = |label: &str, text: &str, min: i64| {
            let bytes = validate::parse_size(text)?;
            validate::disk_bytes(label, i64::try_from(bytes).unwrap_or(i64::MAX), min)
        };
        let disk = size("disk", &self.disk, validate::MIN_DISK_BYTES);
        note("disk", disk.as_ref().map(|_| ()).map_err(Clone::clone));
        let work_disk = size("work disk", &self.work_disk, validate::MIN_WORK_DISK_BYTES);
        note(
            "work_disk",
            work_disk.as_ref().map(|_| ()).map_err(Clone::clone),
        );
        let vmm = self.vmm.parse::<VmmKind>().map_err(ApiError::invalid);
        note("vmm", vmm.as_ref().map(|_| ()).map_err(Clone::clone));
        match (vcpus, memory, disk, work_disk, vmm) {
            (Ok(vcpus), Ok(memory), Ok(disk), Ok(work_disk), Ok(vmm)) if errors.is_empty() => {
                Ok(CreateVmRequest {
                    name: (!self.name.is_empty()).then(|| self.name.clone()),
                    image: Some(self.image.clone()),
                    vcpus: Some(vcpus.into()),
                    memory_mib: Some(memory.into()),
                    disk_bytes: Some(disk as i64),
                    work_disk_bytes: Some(work_disk as i64),
                    nat: Some(self.nat),
                    vmm: Some(vmm),
                    start: Some(self.start),
                    // Published from the VM's page, or with `banger vm create --publish`.
                    publish: Vec::new(),
                    from_snapshot: None,
                })
            }
            _ => Err(errors),
        }
    }

    /// The form page showing this input with `errors`.
    pub fn page(
        &self,
        chrome: Chrome,
        images: &[banger_api::Image],
        errors: &FieldErrors,
    ) -> views::VmFormPage {
        views::VmFormPage {
            chrome,
            form_error: form_error(errors),
            name: field(&self.name, errors, "name"),
            image: field(&self.image, errors, "image"),
            images: images
                .iter()
                .map(|image| {
                    let row = views::ImageRow::from(image);
                    views::ImageChoice {
                        checked: image.name == self.image,
                        detail: [row.distro, row.kernel_version]
                            .into_iter()
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join(", "),
                        name: row.name,
                        href: row.href,
                    }
                })
                .collect(),
            vcpus: field(&self.vcpus, errors, "vcpus"),
            memory_mib: field(&self.memory_mib, errors, "memory_mib"),
            disk: field(&self.disk, errors, "disk"),
            work_disk: field(&self.work_disk, errors, "work_disk"),
            nat: self.nat,
            vmm: field(&self.vmm, errors, "vmm"),
            vmms: [VmmKind::Auto, VmmKind::Firecracker, VmmKind::Qemu]
                .into_iter()
                .map(|k| (k.as_str(), k.as_str() == self.vmm))
                .collect(),
            start: self.start,
        }
    }
}

/// What the register-image form holds, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInput {
    pub name: String,
    pub kernel: String,
    pub initrd: String,
    pub rootfs: String,
}

impl ImageInput {
    pub fn from_form(f: &FormData) -> ImageInput {
        ImageInput {
            name: f.get("name").to_owned(),
            kernel: f.get("kernel").to_owned(),
            initrd: f.get("initrd").to_owned(),
            rootfs: f.get("rootfs").to_owned(),
        }
    }

    /// Checks every field (reading file headers: call it off the async workers); the request
    /// for `crate::image::check_register` when all are fine.
    pub fn check(&self, d: &Daemon) -> Result<RegisterImageRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        if let Err(e) = crate::image::check_new_name(d, &self.name) {
            errors.insert("name", e);
        }
        let path = |label: &str, text: &str| -> Result<std::path::PathBuf, ApiError> {
            if text.is_empty() {
                return Err(ApiError::invalid(format!("choose the {label} file")));
            }
            let path = std::path::PathBuf::from(text);
            if !path.is_absolute() {
                return Err(ApiError::invalid(format!(
                    "{text:?} is not an absolute path"
                )));
            }
            Ok(path)
        };
        let format = |e: banger_image::FormatError| {
            let hint = e.hint();
            let error = ApiError::invalid(e.to_string());
            match hint {
                Some(h) => error.with_hint(h),
                None => error,
            }
        };
        if let Err(e) = path("kernel", &self.kernel)
            .and_then(|p| banger_image::check_kernel(&p).map(|_| ()).map_err(format))
        {
            errors.insert("kernel", e);
        }
        if !self.initrd.is_empty()
            && let Err(e) = path("initrd", &self.initrd)
                .and_then(|p| banger_image::check_initrd(&p).map(|_| ()).map_err(format))
        {
            errors.insert("initrd", e);
        }
        if let Err(e) = path("rootfs", &self.rootfs)
            .and_then(|p| banger_image::check_rootfs(&p).map(|_| ()).map_err(format))
        {
            errors.insert("rootfs", e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RegisterImageRequest {
            publish: Vec::new(),
            name: self.name.clone(),
            kernel: self.kernel.clone(),
            initrd: (!self.initrd.is_empty()).then(|| self.initrd.clone()),
            rootfs: self.rootfs.clone(),
        })
    }

    pub fn page(&self, chrome: Chrome, errors: &FieldErrors) -> views::ImageFormPage {
        views::ImageFormPage {
            chrome,
            form_error: form_error(errors),
            name: field(&self.name, errors, "name"),
            kernel: field(&self.kernel, errors, "kernel"),
            initrd: field(&self.initrd, errors, "initrd"),
            rootfs: field(&self.rootfs, errors, "rootfs"),
        }
    }
}

/// What the bootstrap form holds, as typed. The distribution is always Debian, the one banger
/// bootstraps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootstrapInput {
    pub name: String,
    pub suite: String,
}

/// The only distribution the form offers.
pub const BOOTSTRAP_DISTRO: &str = "debian";

impl BootstrapInput {
    /// The form as first shown: what `banger image bootstrap debian` does without options.
    pub fn defaults() -> BootstrapInput {
        BootstrapInput {
            name: BOOTSTRAP_DISTRO.to_owned(),
            suite: banger_image::bootstrap::DEFAULT_SUITE.to_owned(),
        }
    }

    pub fn from_form(f: &FormData) -> BootstrapInput {
        BootstrapInput {
            name: f.get("name").to_owned(),
            suite: f.get("suite").to_owned(),
        }
    }

    /// Checks both fields as the API does; the request for the image service when they are
    /// fine (which checks them again, and the host).
    pub fn check(&self, d: &Daemon) -> Result<BootstrapImageRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        if let Err(e) = crate::image::check_new_name(d, &self.name) {
            errors.insert("name", e);
        }
        if let Err(e) = validate::suite(&self.suite) {
            errors.insert("suite", e);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(BootstrapImageRequest {
            distro: BOOTSTRAP_DISTRO.to_owned(),
            suite: Some(self.suite.clone()),
            name: Some(self.name.clone()),
        })
    }

    /// The form showing this input with `errors`; `sudo`: why a bootstrap would be refused
    /// for want of `sudo -n`, said before the user tries.
    pub fn form(&self, errors: &FieldErrors, sudo: Option<Problem>) -> views::BootstrapForm {
        views::BootstrapForm {
            form_error: form_error(errors),
            name: field(&self.name, errors, "name"),
            suite: field(&self.suite, errors, "suite"),
            sudo,
        }
    }
}

/// Files a service's error under the field it is about, or under the whole form.
pub fn service_error(e: ApiError) -> FieldErrors {
    let field = if e.code == ErrorCode::AlreadyExists {
        "name"
    } else {
        "form"
    };
    FieldErrors::from([(field, e)])
}

/// The recipe the build form starts with: short, commented, and buildable as it is.
pub const EXAMPLE_RECIPE: &str = r#"# An image build recipe (docs/image-build.md lists every key).
# Typed here, a recipe has no directory: host paths ([[file]] src,
# [[run]] script) must be absolute paths on the daemon's host.
name = "tools"
# base = "debian"            # the configured default image when absent
packages = ["jq"]

[[run]]
command = "echo 'built by banger image build' >/etc/motd"
"#;

/// What the build form holds, as typed: a recipe (or the name of a built-in one) and the
/// overrides `banger image build` has as flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInput {
    /// The recipe's TOML, used when `builtin` is empty.
    pub recipe: String,
    /// A built-in recipe's name (`banger_api::recipe::BUILTIN`); empty: the typed recipe.
    pub builtin: String,
    /// Replaces the recipe's `name` when not empty.
    pub name: String,
    /// Replaces the recipe's `base` when not empty.
    pub base: String,
    pub no_cache: bool,
    /// The new image replaces an image of its name (`--replace`).
    pub replace: bool,
}

impl BuildInput {
    /// The form as first shown: the example recipe.
    pub fn defaults() -> BuildInput {
        BuildInput {
            recipe: EXAMPLE_RECIPE.to_owned(),
            ..BuildInput::default()
        }
    }

    pub fn from_form(f: &FormData) -> BuildInput {
        BuildInput {
            // Not trimmed: TOML is kept as typed (a browser sends CRLF line ends, which TOML
            // reads as well).
            recipe: f.0.get("recipe").cloned().unwrap_or_default(),
            builtin: f.get("builtin").to_owned(),
            name: f.get("name").to_owned(),
            base: f.get("base").to_owned(),
            no_cache: f.get("no_cache") == "on",
            replace: f.get("replace") == "on",
        }
    }

    /// Parses and checks the recipe with the overrides applied, noting every mistake under
    /// its field; the request for the build service when there are none (which checks it
    /// again, with the host's files).
    pub fn check(&self, d: &Daemon) -> Result<BuildImageRequest, FieldErrors> {
        let mut errors = FieldErrors::new();
        // Mistakes in the recipe itself go under what it came from.
        let source = if self.builtin.is_empty() {
            "recipe"
        } else {
            "builtin"
        };
        let text = if self.builtin.is_empty() {
            Ok(self.recipe.as_str())
        } else {
            banger_api::recipe::builtin(&self.builtin)
        };
        let recipe = text.and_then(Recipe::parse).and_then(|recipe| {
            let relative = recipe.relative_host_paths();
            if relative.is_empty() {
                return Ok(recipe);
            }
            let paths: Vec<String> = relative
                .iter()
                .map(|(key, path)| format!("{key} {path:?}"))
                .collect();
            Err(ApiError::invalid(format!(
                "{} {} not an absolute path: the web form takes absolute host paths only",
                paths.join(", "),
                if paths.len() == 1 { "is" } else { "are" },
            ))
            .with_hint(
                "a recipe typed here has no directory to be relative to: write the full path \
                 of each file on the daemon's host, or use [[run]] command and [[download]] \
                 instead",
            ))
        });
        let mut recipe = match recipe {
            Ok(recipe) => Some(recipe),
            Err(e) => {
                errors.insert(source, e);
                None
            }
        };
        if !self.name.is_empty() {
            if let Err(e) = check_name(d, &self.name, self.replace) {
                errors.insert("name", e);
            }
        } else if let Some(name) = recipe.as_ref().and_then(|r| r.name.as_deref())
            && let Err(e) = check_name(d, name, self.replace)
        {
            errors.insert("name", e);
        } else if recipe.as_ref().is_some_and(|r| r.name.is_none()) {
            errors.insert(
                "name",
                ApiError::invalid("the recipe names no image")
                    .with_hint("give the image a name here, or name = \"...\" in the recipe"),
            );
        }
        // The base: the field's, else the recipe's, else the configured default; unknown
        // while the recipe cannot be read and the field is empty.
        let base = match (&recipe, self.base.is_empty()) {
            (_, false) => Some((self.base.clone(), "")),
            (Some(Recipe { base: Some(b), .. }), true) => Some((b.clone(), "")),
            (Some(_), true) => Some((
                d.config.default_image.clone(),
                " (the configured default image)",
            )),
            (None, true) => None,
        };
        if let Some((base, said)) = base {
            let known = validate::name("base image", &base).and_then(|()| {
                match d.store.find_image(&base)? {
                    Some(_) => Ok(()),
                    None => Err(
                        ApiError::invalid(format!("unknown base image {base:?}{said}"))
                            .with_hint("choose one of the images listed on the images page"),
                    ),
                }
            });
            if let Err(e) = known {
                errors.insert("base", e);
            }
        }
        if let Some(recipe) = &mut recipe {
            if !self.name.is_empty() {
                recipe.name = Some(self.name.clone());
            }
            if !self.base.is_empty() {
                recipe.base = Some(self.base.clone());
            }
            // The name and base are checked above, under their own fields.
            let rest = Recipe {
                name: None,
                base: None,
                ..recipe.clone()
            };
            if let Err(e) = rest.check() {
                errors.insert(source, e);
            }
        }
        match recipe {
            Some(recipe) if errors.is_empty() => Ok(BuildImageRequest {
                recipe,
                no_cache: self.no_cache.then_some(true),
                download_only: None,
                replace: self.replace.then_some(true),
            }),
            _ => Err(errors),
        }
    }

    pub fn page(&self, chrome: Chrome, errors: &FieldErrors) -> views::BuildFormPage {
        views::BuildFormPage {
            chrome,
            form_error: form_error(errors),
            recipe: field(&self.recipe, errors, "recipe"),
            builtin: field(&self.builtin, errors, "builtin"),
            builtins: std::iter::once(("", "The recipe below", self.builtin.is_empty()))
                .chain(
                    banger_api::recipe::BUILTIN
                        .iter()
                        .map(|(name, _)| (*name, *name, *name == self.builtin)),
                )
                .collect(),
            name: field(&self.name, errors, "name"),
            base: field(&self.base, errors, "base"),
            no_cache: self.no_cache,
            replace: self.replace,
        }
    }
}

/// The name of an image a form builds or promotes, checked as the service does; a taken one's
/// hint names the form's own way out.
fn check_name(d: &Daemon, name: &str, replace: bool) -> Result<(), ApiError> {
    crate::image::check_name(d, name, replace).map_err(|e| {
        if e.code == ErrorCode::AlreadyExists {
            e.with_hint(
                "pick another name, or tick \u{201c}Replace an image of this name\u{201d}: the \
                 old image is then kept, renamed, while VMs or snapshots use it",
            )
        } else {
            e
        }
    })
}

/// What a VM page's promote form holds, as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromoteInput {
    pub name: String,
    /// The VM's `/root` becomes the image's work seed.
    pub with_work: bool,
    /// The new image replaces an image of its name (`--replace`).
    pub replace: bool,
}

impl PromoteInput {
    pub fn from_form(f: &FormData) -> PromoteInput {
        PromoteInput {
            name: f.get("name").to_owned(),
            with_work: f.get("with_work") == "on",
            replace: f.get("replace") == "on",
        }
    }

    /// Checks the name; the request for the promote service (which checks it again, and the
    /// VM's state).
    pub fn check(&self, d: &Daemon, vm: &str) -> Result<PromoteImageRequest, FieldErrors> {
        check_name(d, &self.name, self.replace).map_err(|e| FieldErrors::from([("name", e)]))?;
        Ok(PromoteImageRequest {
            vm: vm.to_owned(),
            name: self.name.clone(),
            with_work: self.with_work.then_some(true),
            replace: self.replace.then_some(true),
        })
    }

    pub fn form(&self, errors: &FieldErrors) -> views::PromoteForm {
        views::PromoteForm {
            form_error: form_error(errors),
            name: field(&self.name, errors, "name"),
            with_work: self.with_work,
            replace: self.replace,
        }
    }
}
