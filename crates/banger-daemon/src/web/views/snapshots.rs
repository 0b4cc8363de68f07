//! The snapshot views: a snapshot's row, the list page and the delete confirmation.

use askama::Template;

use super::Chrome;
use super::format::{encode, size, time};

/// A snapshot in the console's list.
#[derive(Debug, Clone)]
pub struct SnapshotRow {
    pub name: String,
    pub vm: String,
    pub image: String,
    pub memory: String,
    pub size: String,
    pub created: String,
    pub restore_action: String,
    pub delete_href: String,
}

impl From<&banger_api::Snapshot> for SnapshotRow {
    fn from(s: &banger_api::Snapshot) -> Self {
        let href = format!("/snapshots/{}", encode(&s.name));
        SnapshotRow {
            name: s.name.clone(),
            vm: s.vm.name.clone(),
            image: s.image.name.clone(),
            memory: format!("{} MiB", s.memory_mib),
            size: size(s.size_bytes),
            created: time(s.created_at),
            restore_action: format!("{href}/restore"),
            delete_href: format!("{href}/delete"),
        }
    }
}

#[derive(Template)]
#[template(path = "snapshots.html")]
pub struct SnapshotListPage {
    pub chrome: Chrome,
    pub snapshots: Vec<SnapshotRow>,
    /// Why the last "Create VM" was refused.
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "snapshot_delete.html")]
pub struct SnapshotDeletePage {
    pub chrome: Chrome,
    pub snapshot: SnapshotRow,
}
