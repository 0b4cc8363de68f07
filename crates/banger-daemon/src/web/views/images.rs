//! The image views: an image's row in lists, its page with its boot files, the list page with
//! its bootstrap form, and the build, register and promote forms.

use askama::Template;

use banger_api::Image;

use super::format::{image_href, size, time, vm_href, with_query};
use super::{Chrome, Field, FormError, Link};
use crate::web::privilege::Problem;

/// An image as lists and its page show it.
#[derive(Debug, Clone)]
pub struct ImageRow {
    pub name: String,
    pub href: String,
    pub source: &'static str,
    pub distro: String,
    pub kernel_version: String,
    pub rootfs: String,
    pub allocated: String,
    pub created: String,
    /// Set for a retired image: what replaced it.
    pub retired: Option<String>,
}

impl From<&Image> for ImageRow {
    fn from(image: &Image) -> Self {
        let files = &image.files;
        let allocated = files.kernel.allocated_bytes
            + files.rootfs.allocated_bytes
            + files.initrd.as_ref().map_or(0, |f| f.allocated_bytes);
        ImageRow {
            name: image.name.clone(),
            href: image_href(&image.name),
            source: image.source.as_str(),
            distro: match (&image.manifest.distro, &image.manifest.suite) {
                (Some(d), Some(s)) => format!("{d} {s}"),
                (Some(d), None) => d.clone(),
                _ => String::new(),
            },
            kernel_version: image.manifest.kernel_version.clone().unwrap_or_default(),
            rootfs: size(files.rootfs.bytes),
            allocated: size(allocated),
            created: time(image.created_at),
            retired: image.retired.as_ref().map(|r| {
                let by = r
                    .replaced_by
                    .as_ref()
                    .map(|by| format!(", replaced by {}", by.name))
                    .unwrap_or_default();
                format!(
                    "retired {}{by}: was {}, kept while VMs or snapshots use it",
                    time(r.at),
                    r.name
                )
            }),
        }
    }
}

/// One file of an image's boot set.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub role: &'static str,
    pub path: String,
    pub size: String,
    pub allocated: String,
}

#[derive(Template)]
#[template(path = "images.html")]
pub struct ImageListPage {
    pub chrome: Chrome,
    pub images: Vec<ImageRow>,
    pub bootstrap: BootstrapForm,
}

/// The images page's bootstrap form.
#[derive(Debug, Clone)]
pub struct BootstrapForm {
    pub form_error: Option<FormError>,
    pub name: Field,
    pub suite: Field,
    /// Why `sudo -n` would refuse a bootstrap's root-owned steps (the doctor's check).
    pub sudo: Option<Problem>,
}

/// The build form (`/new/build`).
#[derive(Template)]
#[template(path = "image_build.html")]
pub struct BuildFormPage {
    pub chrome: Chrome,
    pub form_error: Option<FormError>,
    pub recipe: Field,
    pub builtin: Field,
    /// (value, label, selected): the typed recipe, then each built-in one.
    pub builtins: Vec<(&'static str, &'static str, bool)>,
    pub name: Field,
    pub base: Field,
    pub no_cache: bool,
    pub replace: bool,
}

/// A stopped VM's promote form.
#[derive(Debug, Clone)]
pub struct PromoteForm {
    pub form_error: Option<FormError>,
    pub name: Field,
    pub with_work: bool,
    pub replace: bool,
}

#[derive(Template)]
#[template(path = "image.html")]
pub struct ImagePage {
    pub chrome: Chrome,
    pub image: ImageRow,
    pub id: String,
    pub files: Vec<FileRow>,
    pub created_from: String,
    pub packages: Vec<(String, String)>,
    pub services: Vec<(String, u16)>,
    pub manifest_json: String,
    pub used_by: Vec<Link>,
    pub new_vm_href: String,
}

impl ImagePage {
    pub fn new(chrome: Chrome, image: &Image, used_by: &[String]) -> ImagePage {
        let file = |role, f: &banger_api::ImageFile| FileRow {
            role,
            path: f.path.clone(),
            size: size(f.bytes),
            allocated: size(f.allocated_bytes),
        };
        let mut files = vec![file("kernel", &image.files.kernel)];
        if let Some(initrd) = &image.files.initrd {
            files.push(file("initrd", initrd));
        }
        files.push(file("rootfs", &image.files.rootfs));
        let m = &image.manifest;
        ImagePage {
            chrome,
            image: ImageRow::from(image),
            id: image.id.clone(),
            files,
            created_from: m.created_from.clone(),
            packages: m
                .packages
                .iter()
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect(),
            services: m
                .services
                .iter()
                .map(|s| (s.name.clone(), s.port))
                .collect(),
            manifest_json: serde_json::to_string_pretty(m).unwrap_or_default(),
            used_by: used_by
                .iter()
                .map(|name| Link {
                    label: name.clone(),
                    href: vm_href(name),
                })
                .collect(),
            new_vm_href: with_query("/new/vm", &[("image", &image.name)]),
        }
    }
}

#[derive(Template)]
#[template(path = "image_new.html")]
pub struct ImageFormPage {
    pub chrome: Chrome,
    pub form_error: Option<FormError>,
    pub name: Field,
    pub kernel: Field,
    pub initrd: Field,
    pub rootfs: Field,
}

/// A path field of the register form with its picker link.
#[derive(Debug, Clone)]
pub struct PathField<'a> {
    pub id: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub field: &'a Field,
    pub browse_href: String,
}

impl ImageFormPage {
    /// The picker link for `field`, carrying what the form holds so nothing is lost.
    pub fn browse_href(&self, field: &str) -> String {
        with_query(
            "/picker",
            &[
                ("field", field),
                ("name", &self.name.value),
                ("kernel", &self.kernel.value),
                ("initrd", &self.initrd.value),
                ("rootfs", &self.rootfs.value),
            ],
        )
    }

    pub fn path_fields(&self) -> Vec<PathField<'_>> {
        [
            (
                "kernel",
                "Kernel",
                "An uncompressed ELF vmlinux.",
                &self.kernel,
            ),
            (
                "initrd",
                "Initrd (optional)",
                "A newc cpio archive, bare or compressed.",
                &self.initrd,
            ),
            (
                "rootfs",
                "Root filesystem",
                "An ext4 filesystem image.",
                &self.rootfs,
            ),
        ]
        .into_iter()
        .map(|(id, label, help, field)| PathField {
            id,
            label,
            help,
            field,
            browse_href: self.browse_href(id),
        })
        .collect()
    }
}
