//! The one-name prompts of snapshots and clones: the name of a snapshot of a VM (`banger vm
//! snapshot VM [--name SNAP]`, empty for bangerd's dated default), the new VM of a clone
//! (`banger vm clone VM NEW`) and the new VM restored from a snapshot (`banger vm create
//! --from-snapshot SNAP --name NEW`). The name is checked by the rule the CLI applies before
//! anything is sent; bangerd checks it again, and its refusal is shown in the prompt, which
//! stays open to fix the name.

use banger_api::{ApiError, validate};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What the name is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// A snapshot of the running or paused VM `vm`.
    Snapshot { vm: String },
    /// A new VM, a clone of the running or paused VM `vm`.
    Clone { vm: String },
    /// A new VM restored from snapshot `snapshot`.
    Restore { snapshot: String },
}

impl Naming {
    /// The prompt's title.
    pub fn title(&self) -> String {
        match self {
            Naming::Snapshot { vm } => format!(" Snapshot VM {vm} "),
            Naming::Clone { vm } => format!(" Clone VM {vm} "),
            Naming::Restore { snapshot } => format!(" Restore snapshot {snapshot} "),
        }
    }

    /// What the field names, and whether it may be left empty.
    pub fn field(&self) -> (&'static str, bool) {
        match self {
            Naming::Snapshot { .. } => ("snapshot", true),
            Naming::Clone { .. } | Naming::Restore { .. } => ("VM", false),
        }
    }

    /// The line under the field: what happens on Enter.
    pub fn explain(&self) -> String {
        match self {
            Naming::Snapshot { vm } => format!(
                "Pauses {vm}, writes its memory and disks, resumes it. Empty: a dated name."
            ),
            Naming::Clone { vm } => {
                format!("A new VM running from this moment of {vm}, with its own identity.")
            }
            Naming::Restore { snapshot } => {
                format!("A new VM running from the moment of {snapshot}, with its own identity.")
            }
        }
    }
}

/// A key typed into a name field: Backspace deletes, a printable character is added; an edit
/// clears the last refusal (it was about the name as it was). Whether the key edited.
pub fn edit_name(name: &mut String, error: &mut Option<ApiError>, key: KeyEvent) -> bool {
    match key.code {
        KeyCode::Backspace => {
            name.pop();
        }
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) && !c.is_control() => {
            name.push(c);
        }
        _ => return false,
    }
    *error = None;
    true
}

/// What a key press did to the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOutcome {
    Editing,
    Cancel,
    /// Send it: the name typed, `None` for a snapshot left to bangerd's default.
    Submit(Option<String>),
}

/// The prompt over the list.
#[derive(Debug, Clone, PartialEq)]
pub struct NamePrompt {
    pub naming: Naming,
    /// The name, as typed.
    pub name: String,
    /// Why the last submission was refused, here or by bangerd.
    pub error: Option<ApiError>,
    /// Sent; waiting for bangerd's answer.
    pub pending: bool,
}

impl NamePrompt {
    pub fn new(naming: Naming) -> NamePrompt {
        NamePrompt {
            naming,
            name: String::new(),
            error: None,
            pending: false,
        }
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> NameOutcome {
        if key.code == KeyCode::Esc {
            return NameOutcome::Cancel;
        }
        if self.pending {
            return NameOutcome::Editing;
        }
        match key.code {
            KeyCode::Enter => {
                let (kind, optional) = self.naming.field();
                if optional && self.name.is_empty() {
                    self.pending = true;
                    return NameOutcome::Submit(None);
                }
                if let Err(e) = validate::name(kind, &self.name) {
                    self.error = Some(e);
                    return NameOutcome::Editing;
                }
                self.error = None;
                self.pending = true;
                return NameOutcome::Submit(Some(self.name.clone()));
            }
            _ => {
                edit_name(&mut self.name, &mut self.error, key);
            }
        }
        NameOutcome::Editing
    }

    /// bangerd refused: shown in the prompt, which stays open to fix the name.
    pub fn refused(&mut self, error: ApiError) {
        self.pending = false;
        self.error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::plain_key as key;

    fn typed(prompt: &mut NamePrompt, text: &str) {
        for c in text.chars() {
            prompt.handle_key(key(KeyCode::Char(c)));
        }
    }

    #[test]
    fn a_snapshot_name_may_be_left_to_bangerd() {
        let mut prompt = NamePrompt::new(Naming::Snapshot { vm: "dev".into() });
        assert_eq!(
            prompt.handle_key(key(KeyCode::Enter)),
            NameOutcome::Submit(None)
        );
        assert!(prompt.pending);
        // Keys wait for the answer; Esc still closes.
        typed(&mut prompt, "x");
        assert_eq!(prompt.name, "");
        prompt.refused(ApiError::invalid("VM \"dev\" is stopped"));
        assert!(!prompt.pending && prompt.error.is_some());
        typed(&mut prompt, "before-upgradex");
        prompt.handle_key(key(KeyCode::Backspace));
        assert_eq!(prompt.error, None, "an edit clears the refusal");
        assert_eq!(
            prompt.handle_key(key(KeyCode::Enter)),
            NameOutcome::Submit(Some("before-upgrade".into()))
        );
        assert_eq!(prompt.handle_key(key(KeyCode::Esc)), NameOutcome::Cancel);
    }

    #[test]
    fn a_new_vm_needs_a_good_name_before_anything_is_sent() {
        for naming in [
            Naming::Clone { vm: "dev".into() },
            Naming::Restore {
                snapshot: "s1".into(),
            },
        ] {
            let mut prompt = NamePrompt::new(naming);
            assert_eq!(prompt.handle_key(key(KeyCode::Enter)), NameOutcome::Editing);
            assert!(prompt.error.is_some());
            typed(&mut prompt, "Dev 2");
            assert_eq!(prompt.handle_key(key(KeyCode::Enter)), NameOutcome::Editing);
            let error = prompt.error.clone().unwrap();
            assert!(error.message.contains("VM"), "{error:?}");
            assert!(!prompt.pending);
            for _ in 0..5 {
                prompt.handle_key(key(KeyCode::Backspace));
            }
            typed(&mut prompt, "dev2");
            assert_eq!(
                prompt.handle_key(key(KeyCode::Enter)),
                NameOutcome::Submit(Some("dev2".into()))
            );
        }
    }
}
