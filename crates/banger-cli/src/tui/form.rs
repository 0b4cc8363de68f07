//! The create-VM form: what the user typed, which field is being edited, and the errors shown
//! under each field. Values are checked by the very function `banger vm create` uses
//! ([`crate::vm::create_request`]), field by field so each error lands under its own field;
//! bangerd's answer (it checks again, and knows the host's limits and which names and images
//! exist) is placed under the field it concerns when its message says which one.

use banger_api::{ApiError, CreateVmRequest, ErrorCode};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::cli::CreateArgs;
use crate::vm::create_request;

/// The fields, in the order Tab visits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Field {
    #[default]
    Name,
    Image,
    Vcpus,
    Memory,
    Disk,
    WorkDisk,
    Nat,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Name,
        Field::Image,
        Field::Vcpus,
        Field::Memory,
        Field::Disk,
        Field::WorkDisk,
        Field::Nat,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Name => "Name",
            Field::Image => "Image",
            Field::Vcpus => "vCPUs",
            Field::Memory => "Memory MiB",
            Field::Disk => "Disk",
            Field::WorkDisk => "Work disk",
            Field::Nat => "NAT",
        }
    }

    /// What an empty field means, or what to type.
    pub fn hint(self) -> &'static str {
        match self {
            Field::Name => "empty: generated",
            Field::Image => "←/→ to choose",
            Field::Vcpus => "1-32; empty: from config",
            Field::Memory => "≥ 128; empty: from config",
            Field::Disk => "root overlay, e.g. 8G",
            Field::WorkDisk => "/root, e.g. 16G",
            Field::Nat => "Space: masquerade outbound traffic",
        }
    }

    pub fn is_text(self) -> bool {
        !matches!(self, Field::Image | Field::Nat)
    }

    fn step(self, forward: bool) -> Field {
        let i = Field::ALL.iter().position(|f| *f == self).unwrap_or(0);
        let n = Field::ALL.len();
        Field::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }
}

/// What a key press did to the form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Keep editing.
    Editing,
    /// Close the form without creating anything.
    Cancel,
    /// Every value passed the checks: send this request.
    Submit(CreateVmRequest),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateForm {
    pub name: String,
    /// `None` leaves the choice to bangerd's configured default image.
    pub image: Option<String>,
    pub vcpus: String,
    pub memory: String,
    pub disk: String,
    pub work_disk: String,
    pub nat: bool,
    pub focus: Field,
    /// Errors of the shared checks, per field.
    errors: Vec<(Field, ApiError)>,
    /// bangerd's refusal of the last submission; under a field when it names one.
    refusal: Option<(Option<Field>, ApiError)>,
    /// After a first submission the checks run on every edit, so errors disappear as they are
    /// fixed (before it, a half-typed "4" for "4G" would be an error at every key).
    attempted: bool,
    /// The request is on its way to bangerd.
    pub pending: bool,
}

impl CreateForm {
    /// The error shown under `field`, if any: the shared checks first, then bangerd's answer.
    pub fn error(&self, field: Field) -> Option<&ApiError> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, e)| e)
            .or_else(|| match &self.refusal {
                Some((Some(f), e)) if *f == field => Some(e),
                _ => None,
            })
    }

    /// bangerd's refusal when it concerns no single field.
    pub fn general_error(&self) -> Option<&ApiError> {
        match &self.refusal {
            Some((None, e)) => Some(e),
            _ => None,
        }
    }

    /// The text of a text field.
    pub fn text(&self, field: Field) -> &str {
        match field {
            Field::Name => &self.name,
            Field::Vcpus => &self.vcpus,
            Field::Memory => &self.memory,
            Field::Disk => &self.disk,
            Field::WorkDisk => &self.work_disk,
            Field::Image | Field::Nat => "",
        }
    }

    fn text_mut(&mut self, field: Field) -> Option<&mut String> {
        match field {
            Field::Name => Some(&mut self.name),
            Field::Vcpus => Some(&mut self.vcpus),
            Field::Memory => Some(&mut self.memory),
            Field::Disk => Some(&mut self.disk),
            Field::WorkDisk => Some(&mut self.work_disk),
            Field::Image | Field::Nat => None,
        }
    }

    /// Handles a key; `images` are the names the image field cycles through.
    pub fn handle_key(&mut self, key: KeyEvent, images: &[String]) -> Outcome {
        if key.code == KeyCode::Esc {
            return Outcome::Cancel;
        }
        if self.pending {
            // The answer decides what happens next; edits now would not be what was sent.
            return Outcome::Editing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Alt+key arrives when Esc and a key are read together; neither is text.
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let focus = self.focus;
        match key.code {
            KeyCode::Enter => return self.submit(),
            KeyCode::Tab | KeyCode::Down => self.focus = focus.step(true),
            KeyCode::BackTab | KeyCode::Up => self.focus = focus.step(false),
            KeyCode::Left if focus == Field::Image => self.cycle_image(images, false),
            KeyCode::Right if focus == Field::Image => self.cycle_image(images, true),
            KeyCode::Char(' ') if focus == Field::Image => self.cycle_image(images, true),
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') if focus == Field::Nat => {
                self.nat = !self.nat;
                self.edited(focus);
            }
            KeyCode::Char('u') if ctrl && focus.is_text() => {
                if let Some(text) = self.text_mut(focus) {
                    text.clear();
                }
                self.edited(focus);
            }
            KeyCode::Backspace => {
                if let Some(text) = self.text_mut(focus) {
                    text.pop();
                }
                self.edited(focus);
            }
            KeyCode::Char(c) if !ctrl && !alt && focus.is_text() => {
                if let Some(text) = self.text_mut(focus) {
                    text.push(c);
                }
                self.edited(focus);
            }
            _ => {}
        }
        Outcome::Editing
    }

    fn cycle_image(&mut self, images: &[String], forward: bool) {
        // Position 0 is the configured default, then the images in list order.
        let n = images.len() + 1;
        let current = self
            .image
            .as_ref()
            .and_then(|name| images.iter().position(|i| i == name))
            .map_or(0, |i| i + 1);
        let next = if forward {
            (current + 1) % n
        } else {
            (current + n - 1) % n
        };
        self.image = next.checked_sub(1).map(|i| images[i].clone());
        self.edited(Field::Image);
    }

    fn edited(&mut self, field: Field) {
        if matches!(&self.refusal, Some((f, _)) if f.is_none() || *f == Some(field)) {
            self.refusal = None;
        }
        if self.attempted {
            self.errors = self.check();
        }
    }

    fn submit(&mut self) -> Outcome {
        self.attempted = true;
        self.refusal = None;
        self.errors = self.check();
        if let Some((field, _)) = self.errors.first() {
            self.focus = *field;
            return Outcome::Editing;
        }
        match create_request(&self.args()) {
            Ok(request) => {
                self.pending = true;
                Outcome::Submit(request)
            }
            // Unreachable while every field passed on its own; shown rather than lost.
            Err(e) => {
                self.refusal = Some((None, e));
                Outcome::Editing
            }
        }
    }

    /// bangerd refused the request: show why, under the field it names.
    pub fn refused(&mut self, error: ApiError) {
        self.pending = false;
        let field = field_of(&error);
        if let Some(field) = field {
            self.focus = field;
        }
        self.refusal = Some((field, error));
    }

    /// The arguments `banger vm create` would have been given. Numbers that do not parse are
    /// left out here; [`CreateForm::check`] reports them.
    fn args(&self) -> CreateArgs {
        CreateArgs {
            // Like `banger vm create`: the VM starts, and the app follows the start.
            no_start: false,
            no_wait: false,
            name: non_empty(&self.name),
            image: self.image.clone(),
            vcpus: non_empty(&self.vcpus).and_then(|v| v.trim().parse().ok()),
            memory: non_empty(&self.memory).and_then(|v| v.trim().parse().ok()),
            disk: non_empty(&self.disk),
            work_disk: non_empty(&self.work_disk),
            nat: self.nat,
            vmm: None,
            publish: Vec::new(),
            from_snapshot: None,
        }
    }

    /// Runs the CLI's checks on each field alone, so that every field gets its own error.
    fn check(&self) -> Vec<(Field, ApiError)> {
        let all = self.args();
        let alone = || CreateArgs {
            no_start: false,
            no_wait: false,
            name: None,
            image: None,
            vcpus: None,
            memory: None,
            disk: None,
            work_disk: None,
            nat: false,
            vmm: None,
            publish: Vec::new(),
            from_snapshot: None,
        };
        let vcpus = whole_number(&self.vcpus, "vCPUs", "a number from 1 to 32");
        let memory = whole_number(&self.memory, "memory", "a number of MiB, e.g. 1024");
        let checks: [(Field, Result<CreateArgs, ApiError>); 5] = [
            (
                Field::Name,
                Ok(CreateArgs {
                    name: all.name.clone(),
                    ..alone()
                }),
            ),
            (
                Field::Vcpus,
                vcpus.map(|vcpus| CreateArgs { vcpus, ..alone() }),
            ),
            (
                Field::Memory,
                memory.map(|memory| CreateArgs { memory, ..alone() }),
            ),
            (
                Field::Disk,
                Ok(CreateArgs {
                    disk: all.disk.clone(),
                    ..alone()
                }),
            ),
            (
                Field::WorkDisk,
                Ok(CreateArgs {
                    work_disk: all.work_disk,
                    ..alone()
                }),
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(field, args)| {
                args.and_then(|args| create_request(&args).map(|_| ()))
                    .err()
                    .map(|e| (field, e))
            })
            .collect()
    }
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// An optional whole number typed in a text field; clap reports these for the CLI.
fn whole_number(text: &str, what: &str, expected: &str) -> Result<Option<i64>, ApiError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        ApiError::invalid(format!("{what} must be a whole number (got {text:?})")).with_hint(
            format!("type {expected}, or leave it empty for the default"),
        )
    })
}

/// Which field bangerd's refusal is about, read from its message (the API's errors name no
/// field, but their messages start with what was wrong).
pub fn field_of(error: &ApiError) -> Option<Field> {
    let m = error.message.as_str();
    if error.code == ErrorCode::AlreadyExists || m.starts_with("VM name") {
        Some(Field::Name)
    } else if m.starts_with("unknown image") {
        Some(Field::Image)
    } else if m.starts_with("vCPUs") {
        Some(Field::Vcpus)
    } else if m.starts_with("memory") {
        Some(Field::Memory)
    } else if m.starts_with("work disk") {
        Some(Field::WorkDisk)
    } else if m.starts_with("disk") {
        Some(Field::Disk)
    } else {
        None
    }
}
