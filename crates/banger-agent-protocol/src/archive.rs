//! The tar archives of `vm cp`, in both directions: [`pack`] writes a file or directory tree
//! (under its own name, another name, or as the bare contents of a directory, see
//! [`TopName`]), [`unpack`] extracts an archive into a directory. Where a copy lands
//! (`docker cp`'s rules) is decided by the caller, which picks the directory to extract into
//! and the name the archive's top entry carries; these two functions only move trees. The agent uses them for
//! `GET/PUT /v1/files` and the host uses the same two functions on its side, so neither end
//! extracts an archive without the same checks.
//!
//! [`unpack`] treats the archive as hostile: an entry whose name is absolute or contains `..`
//! is refused, and no entry is written through a symlink (an archive that first plants
//! `link -> /etc` and then writes `link/passwd` is refused at the second entry). Modes are
//! kept; owners are not (files belong to whoever extracts, as with `docker cp`). An archive
//! refused part-way leaves the entries before the bad one in place; the error names the entry.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::{Archive, Builder, EntryType, HeaderMode};

/// Packing or unpacking failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("refusing archive entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: &'static str },

    #[error("archive entry {entry:?} is a {kind}, which cannot be extracted")]
    Unsupported { entry: String, kind: String },

    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    #[error("{} has no name to archive it under; name a file or directory inside it", path.display())]
    NoName { path: PathBuf },

    #[error("{name:?} cannot name an archive's top entry: it must be one path component")]
    BadName { name: String },

    #[error("{} is not a directory, so it has no contents to archive", path.display())]
    NoContents { path: PathBuf },

    #[error("the archive cannot be read: {0}")]
    Corrupt(#[source] io::Error),

    #[error("{} failed: {source}", what)]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
        let what = what.into();
        move |source| ArchiveError::Io { what, source }
    }

    /// Whether the archive itself was refused (a client error) rather than the filesystem
    /// failing.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ArchiveError::Unsafe { .. }
                | ArchiveError::Unsupported { .. }
                | ArchiveError::Corrupt(_)
        )
    }
}

/// What [`unpack`] extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// Bytes of regular file contents.
    pub bytes: u64,
}

/// Whose files the extracted ones are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owners {
    /// The extracting process's user and group (`docker cp`'s default).
    #[default]
    Extractor,
    /// The numeric uid and gid recorded in the archive (`vm cp -a`); needs the right to chown.
    Archive,
}

/// What the top of an archive [`pack_as`] writes is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopName {
    /// The source under this name (one path component): `src` packed as `dst` gives `dst`,
    /// `dst/a.rs`, ...
    Named(String),
    /// A directory's entries at the top, without the directory itself (`SRC/.`): extracting
    /// merges them into the destination directory, whose own mode stays.
    Contents,
}

impl TopName {
    /// `name` after checking it is a single normal path component.
    pub fn named(name: &str) -> Result<TopName, ArchiveError> {
        let mut parts = Path::new(name).components();
        match (parts.next(), parts.next()) {
            (Some(Component::Normal(_)), None) if !name.contains('/') => {
                Ok(TopName::Named(name.to_owned()))
            }
            _ => Err(ArchiveError::BadName {
                name: name.to_owned(),
            }),
        }
    }
}

/// Writes `source` (a file, symlink or directory tree, not followed) as a tar archive whose
/// entries are named from `source`'s own name: packing `/root/src` gives `src`, `src/a.rs`,
/// ... Sockets are skipped (they cannot be archived and mean nothing elsewhere). Returns the
/// writer after the archive's end marker.
pub fn pack<W: Write>(source: &Path, out: W) -> Result<W, ArchiveError> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ArchiveError::NoName {
            path: source.to_owned(),
        })?;
    pack_as(source, &TopName::named(name)?, out)
}

/// [`pack`] with the top entry called `top` instead of `source`'s own name.
pub fn pack_as<W: Write>(source: &Path, top: &TopName, out: W) -> Result<W, ArchiveError> {
    let mut builder = Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(HeaderMode::Complete);
    match top {
        TopName::Named(name) => pack_tree(&mut builder, source, Path::new(name))?,
        TopName::Contents => {
            if !fs::metadata(source).is_ok_and(|m| m.is_dir()) {
                return Err(ArchiveError::NoContents {
                    path: source.to_owned(),
                });
            }
            for child in sorted_children(source)? {
                pack_tree(&mut builder, &source.join(&child), Path::new(&child))?;
            }
        }
    }
    builder
        .into_inner()
        .map_err(ArchiveError::io("finishing the archive"))
}

fn sorted_children(path: &Path) -> Result<Vec<std::ffi::OsString>, ArchiveError> {
    let mut children: Vec<_> = fs::read_dir(path)
        .map_err(ArchiveError::io(format!("listing {}", path.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(ArchiveError::io(format!("listing {}", path.display())))?;
    children.sort();
    Ok(children)
}

fn pack_tree<W: Write>(
    builder: &mut Builder<W>,
    path: &Path,
    name: &Path,
) -> Result<(), ArchiveError> {
    let meta = fs::symlink_metadata(path)
        .map_err(ArchiveError::io(format!("reading {}", path.display())))?;
    let archive_error = || ArchiveError::io(format!("archiving {}", path.display()));
    if meta.file_type().is_socket() {
        return Ok(());
    }
    if !meta.is_dir() {
        return builder
            .append_path_with_name(path, name)
            .map_err(archive_error());
    }
    builder.append_dir(name, path).map_err(archive_error())?;
    for child in sorted_children(path)? {
        pack_tree(builder, &path.join(&child), &name.join(&child))?;
    }
    Ok(())
}

/// Extracts the archive read from `input` into the directory `dest` (created when missing),
/// the files owned by the extracting user.
pub fn unpack<R: Read>(input: R, dest: &Path) -> Result<Unpacked, ArchiveError> {
    unpack_with(input, dest, Owners::Extractor)
}

/// [`unpack`] with the files' owners chosen by `owners`.
pub fn unpack_with<R: Read>(
    input: R,
    dest: &Path,
    owners: Owners,
) -> Result<Unpacked, ArchiveError> {
    fs::create_dir_all(dest).map_err(ArchiveError::io(format!("creating {}", dest.display())))?;
    if !fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        return Err(ArchiveError::NotADirectory {
            path: dest.to_owned(),
        });
    }
    let mut archive = Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(owners == Owners::Archive);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);

    let mut done = Unpacked::default();
    // Directory modes are applied last, deepest first, so that a read-only directory in the
    // archive does not stop its own contents from being written.
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let entries = archive.entries().map_err(ArchiveError::Corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(ArchiveError::Corrupt)?;
        let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = safe_relative(&shown, &entry.path_bytes())?;
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o755) & 0o7777;
        if rel.as_os_str().is_empty() {
            // `.`: the destination itself, which already exists; its mode stays the user's.
            if kind.is_dir() {
                continue;
            }
            return Err(ArchiveError::Unsafe {
                entry: shown,
                reason: "a non-directory entry cannot replace the destination",
            });
        }
        make_parents(dest, &rel, &shown)?;
        let write_error = || ArchiveError::io(format!("extracting {shown:?}"));
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&target).map_err(write_error())?;
                        fs::create_dir(&target).map_err(write_error())?;
                    }
                    Err(_) => fs::create_dir(&target).map_err(write_error())?,
                }
                dir_modes.push((target, mode));
            }
            EntryType::Link => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                let shown_link = String::from_utf8_lossy(&link).into_owned();
                let link_rel = safe_relative(&shown_link, &link)?;
                make_parents(dest, &link_rel, &shown_link)?;
                let source = dest.join(&link_rel);
                if fs::symlink_metadata(&source).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(ArchiveError::Unsafe {
                        entry: shown,
                        reason: "a hard link may not point at a symlink",
                    });
                }
                remove_non_dir(&target).map_err(write_error())?;
                fs::hard_link(&source, &target).map_err(write_error())?;
            }
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {
                if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                    return Err(ArchiveError::Unsafe {
                        entry: shown,
                        reason: "it would replace an existing directory",
                    });
                }
                done.bytes += if kind.is_file() { entry.size() } else { 0 };
                entry.unpack(&target).map_err(write_error())?;
            }
            other => {
                return Err(ArchiveError::Unsupported {
                    entry: shown,
                    kind: format!("{other:?}"),
                });
            }
        }
        done.entries += 1;
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(ArchiveError::io(
            format!("setting the mode of {}", dir.display()),
        ))?;
    }
    Ok(done)
}

/// The entry name as a path that stays below the destination: relative, no `..`. `.`
/// components are dropped, so `./a` is `a` and `.` is empty (the destination itself).
fn safe_relative(shown: &str, raw: &[u8]) -> Result<PathBuf, ArchiveError> {
    use std::os::unix::ffi::OsStrExt;
    let unsafe_entry = |reason| ArchiveError::Unsafe {
        entry: shown.to_owned(),
        reason,
    };
    if raw.contains(&0) {
        return Err(unsafe_entry("the name contains a NUL byte"));
    }
    let mut rel = PathBuf::new();
    for component in Path::new(std::ffi::OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("the name contains `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry("the name is absolute"));
            }
        }
    }
    Ok(rel)
}

/// Makes sure every directory between `dest` and the entry exists and is a real directory:
/// missing ones are created, a symlink or a file on the way is refused.
fn make_parents(dest: &Path, rel: &Path, shown: &str) -> Result<(), ArchiveError> {
    let mut dir = dest.to_owned();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for part in parent.components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ArchiveError::Unsafe {
                    entry: shown.to_owned(),
                    reason: "it would be written through a symlink",
                });
            }
            Ok(_) => {
                return Err(ArchiveError::Unsafe {
                    entry: shown.to_owned(),
                    reason: "a file is in the way of its directory",
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&dir)
                    .map_err(ArchiveError::io(format!("creating {}", dir.display())))?;
            }
            Err(e) => {
                return Err(ArchiveError::Io {
                    what: format!("reading {}", dir.display()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

fn remove_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// An archive with one entry of the given name and type, written header by header so the
    /// names the safe builder would reject can be produced.
    fn archive(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data_or_link) in entries {
            let mut header = tar::Header::new_gnu();
            {
                // Bypass the builder's own path checks by writing the raw name field.
                let gnu = header.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            let data: &[u8] = if kind.is_file() {
                data_or_link.as_bytes()
            } else {
                if matches!(kind, EntryType::Symlink | EntryType::Link) {
                    header.set_link_name(data_or_link).unwrap();
                }
                b""
            };
            header.set_size(data.len() as u64);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn refusal(entries: &[(&str, EntryType, &str)]) -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dest");
        let err = unpack(&archive(entries)[..], &dest).unwrap_err();
        assert!(err.is_refusal(), "{err}");
        (err.to_string(), dir)
    }

    #[test]
    fn parent_components_are_refused() {
        let (err, dir) = refusal(&[("../evil", EntryType::Regular, "x")]);
        assert_eq!(
            err,
            "refusing archive entry \"../evil\": the name contains `..`"
        );
        assert!(!dir.path().join("evil").exists());

        let (err, _dir) = refusal(&[("a/../../evil", EntryType::Regular, "x")]);
        assert!(err.contains("`..`"), "{err}");
    }

    #[test]
    fn absolute_names_are_refused() {
        let (err, _dir) = refusal(&[("/tmp/banger-evil", EntryType::Regular, "x")]);
        assert_eq!(
            err,
            "refusing archive entry \"/tmp/banger-evil\": the name is absolute"
        );
    }

    #[test]
    fn nothing_is_written_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = dir.path().join("dest");
        let err = unpack(
            &archive(&[
                ("link", EntryType::Symlink, outside.to_str().unwrap()),
                ("link/owned", EntryType::Regular, "x"),
            ])[..],
            &dest,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing archive entry \"link/owned\": it would be written through a symlink"
        );
        assert!(!outside.join("owned").exists());
        // The symlink itself is a legitimate entry and was extracted.
        assert!(
            fs::symlink_metadata(dest.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_file_entry_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let dest = dir.path().join("dest");
        fs::create_dir(&dest).unwrap();
        symlink(&victim, dest.join("f")).unwrap();
        unpack(&archive(&[("f", EntryType::Regular, "new")])[..], &dest).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "new");
    }

    #[test]
    fn hard_links_stay_inside() {
        let (err, _dir) = refusal(&[("h", EntryType::Link, "/etc/shadow")]);
        assert!(err.contains("absolute"), "{err}");
        let (err, _dir) = refusal(&[("h", EntryType::Link, "../x")]);
        assert!(err.contains("`..`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let got = unpack(
            &archive(&[
                ("a", EntryType::Regular, "same"),
                ("b", EntryType::Link, "a"),
            ])[..],
            dir.path(),
        )
        .unwrap();
        assert_eq!(got.entries, 2);
        assert_eq!(fs::read_to_string(dir.path().join("b")).unwrap(), "same");
    }

    #[test]
    fn pack_and_unpack_round_trip_a_tree_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("proj");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/run"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(src.join("secret"), "s").unwrap();
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(src.join("bin"), fs::Permissions::from_mode(0o711)).unwrap();
        symlink("bin/run", src.join("run")).unwrap();
        let long = "n".repeat(150);
        fs::write(src.join(&long), "long name").unwrap();

        let tar = pack(&src, Vec::new()).unwrap();
        let dest = dir.path().join("out");
        let got = unpack(&tar[..], &dest).unwrap();
        assert_eq!(got.entries, 6);
        let mode = |p: &str| {
            fs::symlink_metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("proj/bin/run"), 0o750);
        assert_eq!(mode("proj/secret"), 0o600);
        assert_eq!(mode("proj/bin"), 0o711);
        assert_eq!(
            fs::read_link(dest.join("proj/run")).unwrap(),
            Path::new("bin/run")
        );
        assert_eq!(
            fs::read_to_string(dest.join("proj").join(&long)).unwrap(),
            "long name"
        );
    }

    #[test]
    fn a_single_file_packs_under_its_name_and_sockets_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, "hello").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();

        let tar = pack(&file, Vec::new()).unwrap();
        let mut names = Vec::new();
        for e in Archive::new(&tar[..]).entries().unwrap() {
            names.push(e.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(names, ["notes.txt"]);

        let tar = pack(dir.path(), Vec::new()).unwrap();
        let out = tempfile::tempdir().unwrap();
        unpack(&tar[..], out.path()).unwrap();
        let top = out.path().join(dir.path().file_name().unwrap());
        assert!(top.join("notes.txt").exists());
        assert!(!top.join("s.sock").exists());

        let err = pack(Path::new("/"), Vec::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::NoName { .. }), "{err}");
    }
}
