//! Snapshot records: what a snapshot of a running VM was taken of and what a restore from it
//! needs. Its files are the daemon's; a record exists only once they are complete.

use banger_api::{ImageRef, Snapshot, SnapshotOrigin, Timestamp};
use rusqlite::{OptionalExtension, TransactionBehavior};

use crate::store::{RowReader, to_i64};
use crate::{Store, StoreError};

const TABLE: &str = "snapshots";

const SELECT_SNAPSHOTS: &str = "SELECT s.id, s.name, s.vm_id, s.vm_name, s.image_id, i.name,
        s.vcpus, s.memory_mib, s.disk_bytes, s.work_disk_bytes, s.firecracker_version, s.cpu,
        s.size_bytes, s.created_at, s.pool_image
     FROM snapshots s LEFT JOIN images i ON i.id = s.image_id";

impl Store {
    /// Records a snapshot whose files are complete; its id and name must be unused.
    pub fn insert_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.insert_snapshot_for(snapshot, None)
    }

    /// [`Store::insert_snapshot`] for the template of the warm pool of image `pool_image`
    /// (hidden from [`Store::list_snapshots`]) when given.
    pub fn insert_snapshot_for(
        &self,
        snapshot: &Snapshot,
        pool_image: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM snapshots WHERE name = ?1 OR id = ?2)")?
            .query_row([&snapshot.name, &snapshot.id], |row| row.get(0))?;
        if taken {
            return Err(StoreError::AlreadyExists {
                kind: "snapshot",
                name: snapshot.name.clone(),
            });
        }
        tx.prepare_cached(
            "INSERT INTO snapshots (id, name, vm_id, vm_name, image_id, vcpus, memory_mib,
                 disk_bytes, work_disk_bytes, firecracker_version, cpu, size_bytes, created_at,
                 pool_image)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(rusqlite::params![
            snapshot.id,
            snapshot.name,
            snapshot.vm.id,
            snapshot.vm.name,
            snapshot.image.id,
            snapshot.vcpus,
            snapshot.memory_mib,
            to_i64("disk_bytes", snapshot.disk_bytes)?,
            to_i64("work_disk_bytes", snapshot.work_disk_bytes)?,
            snapshot.firecracker_version,
            snapshot.cpu,
            to_i64("size_bytes", snapshot.size_bytes)?,
            snapshot.created_at.as_millis(),
            pool_image,
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// Every snapshot but the warm pool's templates, ordered by name.
    pub fn list_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_SNAPSHOTS} WHERE s.pool_image IS NULL ORDER BY s.name"
        ))?;
        let mut rows = stmt.query([])?;
        let mut snapshots = Vec::new();
        while let Some(row) = rows.next()? {
            snapshots.push(decode_snapshot(row)?);
        }
        Ok(snapshots)
    }

    /// The templates of the warm pool, with the image name whose pool each is.
    pub fn pool_templates(&self) -> Result<Vec<(String, Snapshot)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_SNAPSHOTS} WHERE s.pool_image IS NOT NULL ORDER BY s.name"
        ))?;
        let mut rows = stmt.query([])?;
        let mut snapshots = Vec::new();
        while let Some(row) = rows.next()? {
            let image: String = row.get(14)?;
            snapshots.push((image, decode_snapshot(row)?));
        }
        Ok(snapshots)
    }

    /// Every snapshot, the pool's templates included (what needs its files kept).
    pub fn all_snapshots(&self) -> Result<Vec<Snapshot>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_SNAPSHOTS} ORDER BY s.name"))?;
        let mut rows = stmt.query([])?;
        let mut snapshots = Vec::new();
        while let Some(row) = rows.next()? {
            snapshots.push(decode_snapshot(row)?);
        }
        Ok(snapshots)
    }

    /// The snapshot whose id or, failing that, name is `name_or_id`.
    pub fn find_snapshot(&self, name_or_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_SNAPSHOTS} WHERE s.id = ?1 OR s.name = ?1 ORDER BY s.id = ?1 DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query([name_or_id])?;
        match rows.next()? {
            Some(row) => Ok(Some(decode_snapshot(row)?)),
            None => Ok(None),
        }
    }

    /// Forgets the snapshot with `id`.
    pub fn delete_snapshot(&self, id: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let deleted = conn
            .prepare_cached("DELETE FROM snapshots WHERE id = ?1")?
            .execute([id])?;
        if deleted == 0 {
            return Err(StoreError::NotFound {
                kind: "snapshot",
                name: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Names of the snapshots that need the image with `image_id`, ordered by name.
    pub fn snapshots_using_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        snapshots_using_image(&self.conn(), image_id)
    }

    /// The total size of every snapshot's files, for the disk capacity.
    pub fn snapshots_size(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let total: Option<i64> = conn
            .prepare_cached("SELECT SUM(size_bytes) FROM snapshots")?
            .query_row([], |row| row.get(0))
            .optional()?
            .flatten();
        Ok(total.unwrap_or(0).max(0) as u64)
    }
}

pub(crate) fn snapshots_using_image(
    conn: &rusqlite::Connection,
    image_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM snapshots WHERE image_id = ?1 ORDER BY name")?;
    let names = stmt
        .query_map([image_id], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

fn decode_snapshot(row: &rusqlite::Row<'_>) -> Result<Snapshot, StoreError> {
    let r = RowReader::new(row, TABLE, 0)?;
    let image_id: String = r.get(4, "image_id")?;
    let image_name: Option<String> = r.get(5, "image name")?;
    Ok(Snapshot {
        id: r.id().to_owned(),
        name: r.get(1, "name")?,
        vm: SnapshotOrigin {
            id: r.get(2, "vm_id")?,
            name: r.get(3, "vm_name")?,
        },
        image: ImageRef {
            name: image_name.unwrap_or_else(|| image_id.clone()),
            id: image_id,
        },
        vcpus: r.u32(6, "vcpus")?,
        memory_mib: r.u32(7, "memory_mib")?,
        disk_bytes: r.u64(8, "disk_bytes")?,
        work_disk_bytes: r.u64(9, "work_disk_bytes")?,
        firecracker_version: r.get(10, "firecracker_version")?,
        cpu: r.get(11, "cpu")?,
        size_bytes: r.u64(12, "size_bytes")?,
        created_at: Timestamp::from_millis(r.get(13, "created_at")?),
    })
}
