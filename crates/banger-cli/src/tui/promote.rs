//! The promote prompt: the image name a stopped VM becomes, whether its `/root` becomes the
//! image's work seed, and whether it replaces an image of that name, as `banger image promote
//! VM NAME [--with-work] [--replace]` takes them. The name
//! is checked by the rule the CLI applies before anything is sent; bangerd checks it again and
//! decides whether the VM's state allows a promotion, and its refusal is shown in the prompt.

use banger_api::{ApiError, PromoteImageRequest, validate};
use crossterm::event::{KeyCode, KeyEvent};

/// What a key press did to the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromoteOutcome {
    Editing,
    Cancel,
    Submit(PromoteImageRequest),
}

/// The prompt's fields, in the order Tab visits them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromoteField {
    #[default]
    Name,
    WithWork,
    Replace,
}

impl PromoteField {
    fn next(self) -> PromoteField {
        match self {
            PromoteField::Name => PromoteField::WithWork,
            PromoteField::WithWork => PromoteField::Replace,
            PromoteField::Replace => PromoteField::Name,
        }
    }

    fn previous(self) -> PromoteField {
        self.next().next()
    }
}

/// The prompt over the VM list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromoteForm {
    /// The VM to promote.
    pub vm: String,
    /// The new image's name, as typed.
    pub name: String,
    /// Its `/root` becomes the image's work seed.
    pub with_work: bool,
    /// The new image replaces an image of its name.
    pub replace: bool,
    /// The field with the focus (Tab moves it).
    pub focus: PromoteField,
    /// Why the last submission was refused, here or by bangerd.
    pub error: Option<ApiError>,
    /// Sent; waiting for bangerd's answer.
    pub pending: bool,
}

impl PromoteForm {
    pub fn new(vm: String) -> PromoteForm {
        PromoteForm {
            vm,
            ..PromoteForm::default()
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> PromoteOutcome {
        if key.code == KeyCode::Esc {
            return PromoteOutcome::Cancel;
        }
        if self.pending {
            return PromoteOutcome::Editing;
        }
        match key.code {
            KeyCode::Enter => {
                if let Err(e) = validate::name("image", &self.name) {
                    self.error = Some(e);
                    return PromoteOutcome::Editing;
                }
                self.error = None;
                self.pending = true;
                return PromoteOutcome::Submit(PromoteImageRequest {
                    vm: self.vm.clone(),
                    name: self.name.clone(),
                    with_work: self.with_work.then_some(true),
                    replace: self.replace.then_some(true),
                });
            }
            KeyCode::Tab | KeyCode::Down => self.focus = self.focus.next(),
            KeyCode::BackTab | KeyCode::Up => self.focus = self.focus.previous(),
            KeyCode::Char(' ') | KeyCode::Left | KeyCode::Right
                if self.focus != PromoteField::Name =>
            {
                let checkbox = if self.focus == PromoteField::WithWork {
                    &mut self.with_work
                } else {
                    &mut self.replace
                };
                *checkbox = !*checkbox;
            }
            _ if self.focus == PromoteField::Name => {
                super::name_prompt::edit_name(&mut self.name, &mut self.error, key);
            }
            _ => {}
        }
        PromoteOutcome::Editing
    }

    /// bangerd refused the promotion: shown in the prompt, which stays open to fix the name.
    pub fn refused(&mut self, error: ApiError) {
        self.pending = false;
        self.error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::plain_key as key;

    fn typed(form: &mut PromoteForm, text: &str) {
        for c in text.chars() {
            form.handle_key(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn typing_toggling_and_submitting() {
        let mut form = PromoteForm::new("dev".into());
        typed(&mut form, "snapx");
        form.handle_key(key(KeyCode::Backspace));
        form.handle_key(key(KeyCode::Tab));
        form.handle_key(key(KeyCode::Char(' ')));
        assert!(form.with_work);
        typed(&mut form, "ignored");
        assert_eq!(form.name, "snap");
        // The replace box is the next one; Up goes back to the work seed's.
        form.handle_key(key(KeyCode::Tab));
        form.handle_key(key(KeyCode::Right));
        assert!(form.replace && form.with_work);
        form.handle_key(key(KeyCode::Up));
        form.handle_key(key(KeyCode::Char(' ')));
        assert!(!form.with_work);
        form.handle_key(key(KeyCode::Char(' ')));
        form.handle_key(key(KeyCode::Tab));
        form.handle_key(key(KeyCode::Tab));
        assert_eq!(form.focus, PromoteField::Name);
        assert_eq!(
            form.handle_key(key(KeyCode::Enter)),
            PromoteOutcome::Submit(PromoteImageRequest {
                vm: "dev".into(),
                name: "snap".into(),
                with_work: Some(true),
                replace: Some(true),
            })
        );
        assert!(form.pending);
        // Keys wait for the answer; Esc still closes.
        assert_eq!(
            form.handle_key(key(KeyCode::Enter)),
            PromoteOutcome::Editing
        );
        form.refused(ApiError::invalid("an image named \"snap\" already exists"));
        assert!(!form.pending);
        assert_eq!(form.handle_key(key(KeyCode::Esc)), PromoteOutcome::Cancel);
    }

    #[test]
    fn a_bad_name_is_refused_before_anything_is_sent() {
        let mut form = PromoteForm::new("dev".into());
        assert_eq!(
            form.handle_key(key(KeyCode::Enter)),
            PromoteOutcome::Editing
        );
        assert!(form.error.is_some());
        typed(&mut form, "Snap!");
        assert_eq!(
            form.handle_key(key(KeyCode::Enter)),
            PromoteOutcome::Editing
        );
        assert!(
            form.error.as_ref().unwrap().message.contains("lower-case"),
            "{:?}",
            form.error
        );
        assert!(!form.pending);
    }
}
