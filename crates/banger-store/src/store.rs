//! The handle on the state database: opening it with the settings banger relies on (WAL,
//! enforced foreign keys, a busy timeout so that several handles on one file wait for each
//! other instead of failing), running migrations, and turning column values back into typed
//! values while naming the row when one cannot be decoded.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;
use rusqlite::types::FromSql;

use crate::StoreError;
use crate::schema;

/// How long a statement waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements kept prepared per connection; the store uses fewer than this, so none is ever
/// evicted and re-parsed.
const STATEMENT_CACHE: usize = 32;

/// banger's state database. Cheap to share: wrap it in an `Arc`; calls are serialised on one
/// connection, and separate `Store`s (or processes) on the same file coordinate through
/// SQLite's locks.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating when absent, with its parent directory) the database at `path` and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|source| StoreError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::configure(conn, path)
    }

    /// A private database that lives as long as the `Store`; for tests and tools.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::configure(conn, path)
    }

    fn configure(mut conn: Connection, path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: PathBuf::from(path),
            source,
        };
        // First, so that the pragmas below wait for a concurrent opener instead of failing.
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Switching a new file to WAL needs its exclusive lock. When another connection opens
        // the same new file at that moment, SQLite may answer SQLITE_BUSY at once instead of
        // calling the busy handler (it does so where waiting could deadlock), so the switch is
        // retried here until the same timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mode: String = loop {
            match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(open_err)?,
            }
        };
        if mode != "wal" && mode != "memory" {
            tracing::warn!(
                path = %path.display(),
                mode,
                "the state database cannot use WAL; concurrent readers will wait for writers"
            );
        }
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    /// The schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::read_version(&self.conn())
    }

    /// The connection. A panic while it was held cannot leave it half-written (an open
    /// transaction rolls back when dropped), so a poisoned lock is still usable.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Reads columns of one row of `table`, turning every decoding failure into
/// [`StoreError::Corrupt`] naming the row.
pub(crate) struct RowReader<'r, 's> {
    row: &'r rusqlite::Row<'s>,
    table: &'static str,
    id: String,
}

impl<'r, 's> RowReader<'r, 's> {
    /// `id_column` holds the row's id (its primary key).
    pub(crate) fn new(
        row: &'r rusqlite::Row<'s>,
        table: &'static str,
        id_column: usize,
    ) -> Result<Self, StoreError> {
        match row.get::<_, String>(id_column) {
            Ok(id) => Ok(RowReader { row, table, id }),
            Err(err) => Err(StoreError::Corrupt {
                table,
                id: "?".into(),
                detail: format!("its id cannot be read: {err}"),
            }),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            id: self.id.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn get<T: FromSql>(&self, index: usize, column: &str) -> Result<T, StoreError> {
        self.row
            .get(index)
            .map_err(|err| self.corrupt(format!("column {column}: {err}")))
    }

    pub(crate) fn u32(&self, index: usize, column: &str) -> Result<u32, StoreError> {
        let value: i64 = self.get(index, column)?;
        u32::try_from(value)
            .map_err(|_| self.corrupt(format!("{column} is {value}, outside 0..={}", u32::MAX)))
    }

    pub(crate) fn u64(&self, index: usize, column: &str) -> Result<u64, StoreError> {
        let value: i64 = self.get(index, column)?;
        u64::try_from(value).map_err(|_| self.corrupt(format!("{column} is negative ({value})")))
    }

    pub(crate) fn bool(&self, index: usize, column: &str) -> Result<bool, StoreError> {
        match self.get::<i64>(index, column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(format!("{column} is {other}, not 0 or 1"))),
        }
    }

    /// A TEXT column parsed with `FromStr` (enums, addresses).
    pub(crate) fn parse<T>(&self, index: usize, column: &str) -> Result<T, StoreError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let text: String = self.get(index, column)?;
        text.parse().map_err(|err: T::Err| {
            // Most parse errors already quote the value; do not quote it twice.
            let err = err.to_string();
            if err.contains(&text) {
                self.corrupt(format!("{column}: {err}"))
            } else {
                self.corrupt(format!("{column} {text:?}: {err}"))
            }
        })
    }

    /// A TEXT column holding a JSON document.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        index: usize,
        column: &str,
    ) -> Result<T, StoreError> {
        let text: String = self.get(index, column)?;
        serde_json::from_str(&text)
            .map_err(|err| self.corrupt(format!("{column} is not valid JSON for it: {err}")))
    }
}

/// A `u64` for an INTEGER column (SQLite integers are signed 64-bit).
pub(crate) fn to_i64(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { field, value })
}
