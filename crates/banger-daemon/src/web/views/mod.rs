//! What the console's pages show: view models built from the API's types (sizes, times and
//! links already formatted, so templates stay dumb) and the askama templates that render them.
//! Everything here is pure, which is what the snapshot tests render.
//!
//! Every value reaches HTML through askama's escaping; links are built here with their path
//! segments and query values percent-encoded, so a VM or image name can never leave its
//! attribute or its segment.
//!
//! The shared pieces (the page chrome, links, form fields, the picker, the error and refusal
//! pages and rendering) are here; the formatting helpers and each resource's views are in
//! their own module, all re-exported, so users name them `views::X`.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

use crate::web::privilege::Problem;

mod dashboard;
mod format;
mod guest;
mod images;
mod operations;
mod snapshots;
mod vms;

pub use dashboard::*;
pub use format::*;
pub use guest::*;
pub use images::*;
pub use operations::*;
pub use snapshots::*;
pub use vms::*;

/// What every page around its content needs.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// The session's CSRF token; every form carries it. Empty on pages shown without a session.
    pub csrf: String,
    /// The active navigation entry: `dashboard`, `vms`, `images`, `snapshots` or `operations`.
    pub nav: &'static str,
    /// A one-line message after a redirect ("Deleted VM dev.").
    pub notice: Option<String>,
    /// Why banger's privileged steps cannot run (`sudo -n` refused), shown above every page.
    pub banner: Option<Problem>,
}

impl Chrome {
    pub fn signed_in(&self) -> bool {
        !self.csrf.is_empty()
    }
}

/// A link with its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub label: String,
    pub href: String,
}

/// A form field: what the user typed and what is wrong with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub value: String,
    pub error: Option<String>,
    pub hint: Option<String>,
}

impl Field {
    pub fn new(value: impl Into<String>) -> Field {
        Field {
            value: value.into(),
            ..Field::default()
        }
    }

    pub fn invalid(&self) -> bool {
        self.error.is_some()
    }
}

/// An error about the whole form rather than one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    pub message: String,
    pub hint: Option<String>,
}

/// An image offered by the create form.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    pub name: String,
    pub href: String,
    pub checked: bool,
    pub detail: String,
}

/// An entry of the picker.
#[derive(Debug, Clone)]
pub struct PickerEntry {
    pub name: String,
    pub href: String,
    pub is_dir: bool,
    pub size: String,
}

#[derive(Template)]
#[template(path = "picker.html")]
pub struct PickerPage {
    pub chrome: Chrome,
    /// `kernel`, `initrd` or `rootfs`.
    pub field: String,
    pub dir: String,
    pub crumbs: Vec<Link>,
    pub entries: Vec<PickerEntry>,
    /// Entries not shown because the listing is long.
    pub omitted: usize,
    pub hidden_toggle: Link,
    pub back_href: String,
    pub home_href: String,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub chrome: Chrome,
    pub title: String,
    pub message: String,
    pub hint: Option<String>,
}

/// A page shown before (or instead of) the console: no session, wrong host, cross-site. It
/// stands alone, without the stylesheet, which itself needs a session.
#[derive(Template)]
#[template(path = "refusal.html")]
pub struct RefusalPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub sign_in: bool,
}

/// Renders a page; a template error (a bug) becomes a plain 500.
pub fn render(template: &impl Template) -> Response {
    render_with(StatusCode::OK, template)
}

pub fn render_with(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web console: a page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

pub fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    render_with(
        status,
        &RefusalPage {
            title,
            message,
            sign_in: false,
        },
    )
}

/// 401 for everything without a session.
pub fn sign_in_required() -> Response {
    let mut response = render_with(
        StatusCode::UNAUTHORIZED,
        &RefusalPage {
            title: "Sign in",
            message: "This is banger's web console. It needs a session, which only the user who \
                      runs banger can start.",
            sign_in: true,
        },
    );
    // Not an HTTP authentication scheme a browser could prompt for; names what to do.
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("banger-login realm=\"run `banger web`\""),
    );
    response
}

#[cfg(test)]
mod tests;
