//! Image records: registered boot sets with their manifests. Images are immutable once
//! inserted; an image cannot be deleted while a VM is built on it. A new image may take an
//! existing image's name ([`Store::insert_image_replacing`]): the old one is then deleted when
//! nothing uses it, or *retired* (renamed, with a pointer to the image holding its old name)
//! until nothing does.

use banger_api::{Image, ImageRef, RetiredImage, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::store::RowReader;
use crate::{Store, StoreError};

const TABLE: &str = "images";

const SELECT_IMAGES: &str = "SELECT i.id, i.name, i.source, i.files, i.manifest, i.created_at, \
     i.retired_name, i.replaced_by, r.name, i.retired_at \
     FROM images i LEFT JOIN images r ON r.id = i.replaced_by";

/// What became of the image whose name a new image took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// Nothing used it: its record is gone, and its files are the caller's to remove.
    Deleted(Image),
    /// VMs or snapshots use it: it is kept under the retired name `name`.
    Retired { image: Image, name: String },
}

impl Store {
    /// Records a new image; its id and name must both be unused.
    pub fn insert_image(&self, image: &Image) -> Result<(), StoreError> {
        self.insert(image, false).map(|_| ())
    }

    /// Records a new image that takes the name of the image holding it, if any, in one
    /// transaction: that image is deleted when no VM or snapshot uses it (its files are then
    /// the caller's to remove), else retired under a name of its own. Images retired earlier
    /// in favour of it now point at the new image.
    pub fn insert_image_replacing(&self, image: &Image) -> Result<Option<Replaced>, StoreError> {
        self.insert(image, true)
    }

    fn insert(&self, image: &Image, replace: bool) -> Result<Option<Replaced>, StoreError> {
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
        if taken("id", &image.id)? {
            return Err(StoreError::AlreadyExists {
                kind: "image id",
                name: image.id.clone(),
            });
        }
        let mut replaced = None;
        if taken("name", &image.name)? {
            if !replace {
                return Err(StoreError::AlreadyExists {
                    kind: "image",
                    name: image.name.clone(),
                });
            }
            let old = find(&tx, &image.name)?.ok_or_else(|| StoreError::NotFound {
                kind: "image",
                name: image.name.clone(),
            })?;
            let used = !vms_using_image(&tx, &old.id)?.is_empty()
                || !crate::snapshot::snapshots_using_image(&tx, &old.id)?.is_empty();
            if used {
                let name = retired_name(&old.name, &old.id, |n| taken("name", n))?;
                tx.prepare_cached(
                    "UPDATE images SET name = ?2, retired_name = name, replaced_by = ?3,
                     retired_at = ?4 WHERE id = ?1",
                )?
                .execute(rusqlite::params![
                    old.id,
                    name,
                    image.id,
                    Timestamp::now().as_millis()
                ])?;
                replaced = Some(Replaced::Retired { image: old, name });
            } else {
                tx.prepare_cached("DELETE FROM images WHERE id = ?1")?
                    .execute([&old.id])?;
                replaced = Some(Replaced::Deleted(old));
            }
        }
        if let Some(Replaced::Deleted(old) | Replaced::Retired { image: old, .. }) = &replaced {
            tx.prepare_cached("UPDATE images SET replaced_by = ?2 WHERE replaced_by = ?1")?
                .execute([&old.id, &image.id])?;
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
        Ok(replaced)
    }

    /// Retired images that no VM or snapshot uses any more: the daemon deletes them.
    pub fn unused_retired_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "{SELECT_IMAGES} WHERE i.retired_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM vms WHERE vms.image_id = i.id)
             AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.image_id = i.id)
             ORDER BY i.name"
        ))?;
        let mut rows = stmt.query([])?;
        let mut images = Vec::new();
        while let Some(row) = rows.next()? {
            images.push(decode_image(row)?);
        }
        Ok(images)
    }

    /// Every image, ordered by name.
    pub fn list_images(&self) -> Result<Vec<Image>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("{SELECT_IMAGES} ORDER BY i.name"))?;
        let mut rows = stmt.query([])?;
        let mut images = Vec::new();
        while let Some(row) = rows.next()? {
            images.push(decode_image(row)?);
        }
        Ok(images)
    }

    /// The image whose id or, failing that, name is `name_or_id`.
    pub fn find_image(&self, name_or_id: &str) -> Result<Option<Image>, StoreError> {
        find(&self.conn(), name_or_id)
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

fn find(conn: &Connection, name_or_id: &str) -> Result<Option<Image>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SELECT_IMAGES} WHERE i.id = ?1 OR i.name = ?1 ORDER BY i.id = ?1 DESC LIMIT 1"
    ))?;
    let mut rows = stmt.query([name_or_id])?;
    match rows.next()? {
        Some(row) => Ok(Some(decode_image(row)?)),
        None => Ok(None),
    }
}

/// A name for an image retired from `name`: `name` (shortened to fit) and a part of its id,
/// e.g. `dev-3f9a1c2b`, or its whole id if that is taken. Always a valid image name.
fn retired_name(
    name: &str,
    id: &str,
    taken: impl Fn(&str) -> Result<bool, StoreError>,
) -> Result<String, StoreError> {
    let id: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    for len in [8, id.len()] {
        let suffix = &id[..len.min(id.len())];
        let keep = 63 - suffix.len() - 1;
        let stem = name[..name.len().min(keep)].trim_end_matches('-');
        let candidate = format!("{stem}-{suffix}");
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    Err(StoreError::AlreadyExists {
        kind: "image",
        name: format!("{name}-{id}"),
    })
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
        retired: match r.get::<Option<String>>(6, "retired_name")? {
            None => None,
            Some(name) => Some(Box::new(RetiredImage {
                name,
                replaced_by: match (
                    r.get::<Option<String>>(7, "replaced_by")?,
                    r.get::<Option<String>>(8, "name")?,
                ) {
                    (Some(id), Some(name)) => Some(ImageRef { id, name }),
                    _ => None,
                },
                at: Timestamp::from_millis(r.get::<Option<i64>>(9, "retired_at")?.unwrap_or(0)),
            })),
        },
    })
}
