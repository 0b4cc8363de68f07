//! What can go wrong with banger's state database, and how each failure maps onto the API's
//! `{code, message, hint}` shape.

use std::path::PathBuf;

use banger_api::{ApiError, ErrorCode};

/// A failure of the state database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot open the state database {}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    #[error("database schema migration {version} failed")]
    Migrate {
        version: u32,
        source: rusqlite::Error,
    },

    #[error(
        "the state database has schema version {found}, newer than the {supported} this banger \
         knows; upgrade banger"
    )]
    TooNew { found: u32, supported: u32 },

    #[error("the state database has an invalid schema version {found}")]
    BadSchemaVersion { found: i64 },

    #[error("state database query failed")]
    Sqlite(#[from] rusqlite::Error),

    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },

    #[error("image {image:?} not found")]
    ImageNotFound { image: String },

    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },

    #[error("image {image:?} is used by {}: {}", plural(vms.len(), "VM"), vms.join(", "))]
    ImageInUse { image: String, vms: Vec<String> },

    #[error("image {image:?} is the root of {}: {}", plural(snapshots.len(), "snapshot"), snapshots.join(", "))]
    ImageHasSnapshots {
        image: String,
        snapshots: Vec<String>,
    },

    /// A VM is not in a state the requested change can start from.
    #[error("VM {name:?} is {state}; {action}")]
    WrongState {
        name: String,
        state: banger_api::VmState,
        action: String,
        hint: Option<String>,
    },

    /// A host port another VM publishes (or this one already does).
    #[error("host port {port} is already published by VM {vm:?}")]
    PortTaken { port: u16, vm: String },

    #[error("no free {what} left")]
    Exhausted { what: String, hint: String },

    #[error("row {id:?} of table {table} is corrupt: {detail}")]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },

    #[error("invalid subnet {subnet:?}: {reason}")]
    InvalidSubnet { subnet: String, reason: String },

    #[error("{field} = {value} does not fit in the database")]
    OutOfRange { field: &'static str, value: u64 },

    #[error("cannot encode the {what} of VM {vm:?}")]
    EncodeVm {
        what: &'static str,
        vm: String,
        source: serde_json::Error,
    },

    /// A check the caller ran inside the transaction refused the change (admission control).
    #[error("{}", .0.message)]
    Refused(ApiError),

    #[error("cannot encode the {what} of image {image:?}")]
    Encode {
        what: &'static str,
        image: String,
        source: serde_json::Error,
    },
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

impl StoreError {
    /// The API error code this failure answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::NotFound { .. } | StoreError::ImageNotFound { .. } => ErrorCode::NotFound,
            StoreError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            StoreError::ImageInUse { .. }
            | StoreError::ImageHasSnapshots { .. }
            | StoreError::PortTaken { .. } => ErrorCode::InUse,
            StoreError::WrongState { .. } => ErrorCode::InvalidState,
            StoreError::Refused(e) => e.code,
            StoreError::Exhausted { .. } => ErrorCode::Exhausted,
            StoreError::InvalidSubnet { .. } | StoreError::OutOfRange { .. } => {
                ErrorCode::InvalidInput
            }
            StoreError::CreateDir { .. }
            | StoreError::Open { .. }
            | StoreError::Migrate { .. }
            | StoreError::TooNew { .. }
            | StoreError::BadSchemaVersion { .. }
            | StoreError::Sqlite(_)
            | StoreError::Corrupt { .. }
            | StoreError::Encode { .. }
            | StoreError::EncodeVm { .. } => ErrorCode::Internal,
        }
    }

    /// What the user can do about it, when there is something to do.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::TooNew { .. } => Some(
                "this database was written by a newer banger; install that version (or newer) \
                 and restart the daemon with `banger daemon restart`"
                    .into(),
            ),
            StoreError::Exhausted { hint, .. } => Some(hint.clone()),
            StoreError::Refused(e) => e.hint.clone(),
            StoreError::WrongState { hint, .. } => hint.clone(),
            StoreError::ImageInUse { .. } => {
                Some("delete those VMs first (`banger vm delete NAME`)".into())
            }
            StoreError::ImageHasSnapshots { .. } => {
                Some("delete those snapshots first (`banger snapshot delete NAME`)".into())
            }
            StoreError::ImageNotFound { .. } => Some("list images with `banger image list`".into()),
            StoreError::PortTaken { vm, port } => Some(format!(
                "pick another host port, or free it first: `banger vm port rm {vm} {port}`"
            )),
            StoreError::InvalidSubnet { .. } => Some(
                "set `subnet` in config.toml to an IPv4 network in CIDR form with a prefix \
                 from /16 to /29, e.g. \"172.30.0.0/24\""
                    .into(),
            ),
            StoreError::Corrupt { .. } | StoreError::BadSchemaVersion { .. } => Some(
                "the state database was changed outside banger; inspect it with sqlite3 or \
                 restore a backup"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    /// Internal failures carry their whole cause chain in the message: the daemon logs and
    /// returns it once, and a user reporting a bug can paste it.
    fn from(err: StoreError) -> ApiError {
        if let StoreError::Refused(e) = err {
            return e;
        }
        let mut message = err.to_string();
        if err.code() == ErrorCode::Internal {
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
        }
        let api = ApiError::new(err.code(), message);
        match err.hint() {
            Some(hint) => api.with_hint(hint),
            None => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_in_use_names_the_vms() {
        let err = StoreError::ImageInUse {
            image: "debian".into(),
            vms: vec!["a".into(), "b".into()],
        };
        assert_eq!(err.to_string(), "image \"debian\" is used by 2 VMs: a, b");
        let api = ApiError::from(err);
        assert_eq!(api.code, ErrorCode::InUse);
        assert!(api.hint.is_some());
    }

    #[test]
    fn internal_errors_carry_their_cause() {
        let err = StoreError::Migrate {
            version: 2,
            source: rusqlite::Error::InvalidQuery,
        };
        let api = ApiError::from(err);
        assert_eq!(api.code, ErrorCode::Internal);
        assert!(
            api.message
                .starts_with("database schema migration 2 failed: "),
            "{}",
            api.message
        );
    }
}
