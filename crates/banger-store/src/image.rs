//! Image records: registered boot sets with their manifests. Images are immutable once
//! inserted; an image cannot be deleted while a VM is built on it.

use banger_api::{Image, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::RowReader;
use crate::{Store, StoreError};

const TABLE: &str = "images";

const SELECT_IMAGES: &str = "SELECT id, name, source, files, manifest, created_at FROM images";

impl Store {
    /// Records a new image; its id and name must both be unused.
    pub fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        let encode = |what, source| StoreError::Encode {
            what,
            image: image.name.clone(),
            source,
        };
        let files = serde_json::to_string(&image.files).map_err(|e| encode("files", e))?;
        let manifest = serde_json::to_string(&image.manifest).map_err(|e| encode("manifest", e))?;

        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let taken = |column: &str, value: &str| -> Result<bool, StoreError> {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM images WHERE {column} = ?1)");
            Ok(tx
                .prepare_cached(&sql)?
                .query_row([value], |row| row.get(0))?)
        };
        if taken("name", &image.name)? {
            return Err(StoreError::AlreadyExists {
                kind: "image",
                name: image.name.clone(),
            });
        }
        if taken("id", &image.id)? {
            return Err(StoreError::AlreadyExists {
                kind: "image id",
                name: image.id.clone(),
            });
        }
        tx.prepare_cached(
            "INSERT INTO images (id, name, source, files, manifest, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(rusqlite::params![
            image.id,
            image.name,
            image.source.as_str(),
            files,
            manifest,
            image.created_at.as_millis(),
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// Every image, ordered by name.
    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_IMAGES} ORDER BY name"))?;
        let mut rows = stmt.query([])?;
        let mut images = Vec::new();
        while let Some(row) = rows.next()? {
            images.push(decode_image(row)?);
        }
        Ok(images)
    }

    /// The image whose id or, failing that, name is `name_or_id`.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_IMAGES} WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query([name_or_id])?;
        match rows.next()? {
            Some(row) => Ok(Some(decode_image(row)?)),
            None => Ok(None),
        }
    }

    /// Forgets the image with `id`, refusing while VMs use it.
    pub fn delete_image(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let name: String = tx
            .prepare_cached("SELECT name FROM images WHERE id = ?1")?
            .query_row([id], |row| row.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound {
                kind: "image",
                name: id.to_owned(),
            })?;
        let vms = vms_using_image(&tx, id)?;
        if !vms.is_empty() {
            return Err(StoreError::ImageInUse { image: name, vms });
        }
        let snapshots = crate::snapshot::snapshots_using_image(&tx, id)?;
        if !snapshots.is_empty() {
            return Err(StoreError::ImageHasSnapshots {
                image: name,
                snapshots,
            });
        }
        tx.prepare_cached("DELETE FROM images WHERE id = ?1")?
            .execute([id])?;
        tx.commit()?;
        Ok(())
    }

    /// Names of the VMs built on the image with `image_id`, ordered by name.
    pub fn vms_using_image(&self, image_id: &str) -> Result<Vec<String>, StoreError> {
        vms_using_image(&self.conn(), image_id)
    }
}

fn vms_using_image(conn: &Connection, image_id: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT name FROM vms WHERE image_id = ?1 ORDER BY name")?;
    let names = stmt
        .query_map([image_id], |row| row.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(names)
}

fn decode_image(row: &rusqlite::Row<'_>) -> Result<Image, StoreError> {
    let r = RowReader::new(row, TABLE, 0)?;
    Ok(Image {
        id: r.id().to_owned(),
        name: r.get(1, "name")?,
        source: r.parse(2, "source")?,
        files: r.json(3, "files")?,
        manifest: r.json(4, "manifest")?,
        created_at: Timestamp::from_millis(r.get(5, "created_at")?),
    })
}
