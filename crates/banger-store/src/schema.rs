//! The database schema as an append-only list of migrations, and the code that brings a
//! database up to date. `PRAGMA user_version` records how many migrations a database has had;
//! every pending migration runs inside one `BEGIN IMMEDIATE` transaction, so a crash or a
//! failing step leaves the database exactly as it was, and two daemons opening the same file
//! at once cannot both apply the same step.
//!
//! Never edit or reorder an entry once released: add a new one instead.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Migration `n` (1-based) is `MIGRATIONS[n - 1]`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    //
    // Images keep their boot set (`files`) and manifest as JSON documents: they are written
    // once (images are immutable) and always read whole. VMs keep every allocated value in its
    // own UNIQUE column so that the database, not only the allocator, refuses duplicates, and
    // keep the gateway and prefix they were given so a later change of the configured subnet
    // does not change how an existing VM decodes.
    "
    CREATE TABLE images (
        id          TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL UNIQUE,
        source      TEXT NOT NULL,
        files       TEXT NOT NULL,
        manifest    TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE vms (
        id               TEXT PRIMARY KEY NOT NULL,
        name             TEXT NOT NULL UNIQUE,
        image_id         TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
        vcpus            INTEGER NOT NULL,
        memory_mib       INTEGER NOT NULL,
        disk_bytes       INTEGER NOT NULL,
        work_disk_bytes  INTEGER NOT NULL,
        nat              INTEGER NOT NULL,
        vmm              TEXT NOT NULL,
        state            TEXT NOT NULL,
        ip               TEXT NOT NULL UNIQUE,
        gateway          TEXT NOT NULL,
        prefix_len       INTEGER NOT NULL,
        mac              TEXT NOT NULL UNIQUE,
        vsock_cid        INTEGER NOT NULL UNIQUE,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    ) STRICT;
    ",
    // 2: "which VMs use this image" (image delete, image show) without a full scan of vms;
    // SQLite does not index the child side of a foreign key by itself.
    "
    CREATE INDEX vms_image_id ON vms (image_id);
    ",
    // 3: what a running VM is made of on the host (its VMM process and sockets, its tap) so a
    // restarted daemon can find it again; why it last failed; the work seed its work disk was
    // made from. `runtime` is a JSON document written whole at each start and cleared at stop.
    "
    ALTER TABLE vms ADD COLUMN runtime TEXT;
    ALTER TABLE vms ADD COLUMN last_error TEXT;
    ALTER TABLE vms ADD COLUMN work_seed TEXT;
    ",
    // 4: snapshots of running VMs. `vm_id` and `vm_name` say what it was taken of and are kept
    // when that VM goes (no foreign key); the image cannot go while a snapshot needs its root.
    // `spec` holds what a restore takes from it (sizes, the source's agent token) as JSON.
    "
    CREATE TABLE snapshots (
        id                   TEXT PRIMARY KEY NOT NULL,
        name                 TEXT NOT NULL UNIQUE,
        vm_id                TEXT NOT NULL,
        vm_name              TEXT NOT NULL,
        image_id             TEXT NOT NULL REFERENCES images (id) ON DELETE RESTRICT,
        vcpus                INTEGER NOT NULL,
        memory_mib           INTEGER NOT NULL,
        disk_bytes           INTEGER NOT NULL,
        work_disk_bytes      INTEGER NOT NULL,
        firecracker_version  TEXT NOT NULL,
        cpu                  TEXT NOT NULL,
        size_bytes           INTEGER NOT NULL,
        created_at           INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX snapshots_image_id ON snapshots (image_id);
    ",
    // 5: host ports forwarded to VMs' ports. A host port belongs to one VM whatever address
    // it listens on (UNIQUE), so two VMs never fight over it; the rows go with their VM.
    "
    CREATE TABLE vm_published_ports (
        vm_id       TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
        address     TEXT NOT NULL,
        host_port   INTEGER NOT NULL UNIQUE,
        guest_port  INTEGER NOT NULL,
        PRIMARY KEY (vm_id, host_port)
    ) STRICT;
    ",
    // 6: the warm pool. `vms.pool` says what a VM is to it: NULL for a VM a user made,
    // `template` and `ready` for the pool's own hidden VMs, `taken` for a user's VM that came
    // from it. A snapshot with `pool_image` set is the template of that image's pool (hidden
    // from lists). `pool_sizes` holds `banger pool set`, by image name: a pool outlives the
    // image it was made from, and a new image of that name gets a new template.
    "
    ALTER TABLE vms ADD COLUMN pool TEXT;
    ALTER TABLE snapshots ADD COLUMN pool_image TEXT;
    CREATE TABLE pool_sizes (
        image  TEXT PRIMARY KEY NOT NULL,
        size   INTEGER NOT NULL
    ) STRICT;
    ",
    // 7: retired images. An image whose name another took (`--replace`) keeps its record,
    // renamed, while VMs or snapshots use it: `retired_name` is the name it had,
    // `replaced_by` the id of the image that holds that name now (no foreign key: it may go
    // first), `retired_at` when. All three are NULL for an image in service.
    "
    ALTER TABLE images ADD COLUMN retired_name TEXT;
    ALTER TABLE images ADD COLUMN replaced_by TEXT;
    ALTER TABLE images ADD COLUMN retired_at INTEGER;
    ",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies every pending migration in one transaction; returns the resulting version.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Read inside the write transaction: another process may have migrated since we opened.
    let found = read_version(&tx)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as u32 + 1;
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migrate { version, source })?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|source| StoreError::Migrate {
            version: SCHEMA_VERSION,
            source,
        })?;
    tx.commit()?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        "migrated the state database"
    );
    Ok(SCHEMA_VERSION)
}

pub(crate) fn read_version(conn: &Connection) -> Result<u32, StoreError> {
    let raw: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    u32::try_from(raw).map_err(|_| StoreError::BadSchemaVersion { found: raw })
}
