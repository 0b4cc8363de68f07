//! `vm cp`'s rules for where a copy lands, which are `docker cp`'s, in both directions. Both
//! ends speak the same tar archives ([`banger_agent_protocol::archive`]): the receiving side extracts
//! into an existing directory, and the sending side names the archive's top entry. This
//! module looks at the source and the destination (a `stat` through the agent for the guest
//! side, the filesystem for the host side) and decides the directory to extract into and
//! that name, or refuses with what is wrong, before a byte is sent.
//!
//! | source        | destination                  | result                                            |
//! |---------------|------------------------------|---------------------------------------------------|
//! | file          | missing, parent exists       | written as the destination                        |
//! | file          | missing, ends with `/`       | error: the directory does not exist               |
//! | file          | existing file                | overwrites it                                     |
//! | file          | existing directory           | copied into it under its own name                 |
//! | dir           | missing, parent exists       | created as the destination, with the dir's contents |
//! | dir           | existing file                | error: cannot copy a directory onto a file        |
//! | dir           | existing directory           | copied into it under its own name                 |
//! | dir `/.`      | existing directory           | its contents copied into it                       |
//! | file `/` `/.` | anything                     | error: not a directory                            |
//! | anything      | missing parent               | error: the parent directory does not exist        |
//! | missing       | anything                     | error: the source does not exist (named)          |

use banger_agent_protocol::archive::TopName;

/// Why a copy was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpError {
    #[error("{src} does not exist")]
    SourceMissing { src: String },

    #[error("{src} is not a directory, but the path ends with `/`")]
    SourceNotDirectory { src: String },

    #[error("{src} has no name to copy it under")]
    SourceNoName { src: String },

    #[error("the destination directory {dst} does not exist")]
    DestinationDirectoryMissing { dst: String },

    #[error("{dst} is not a directory, but the path ends with `/`")]
    DestinationNotDirectory { dst: String },

    #[error("cannot copy the directory {src} onto the file {dst}")]
    DirectoryOntoFile { src: String, dst: String },

    #[error("cannot copy to {dst}: its parent directory {parent} does not exist")]
    ParentMissing { dst: String, parent: String },

    #[error("a tar stream from standard input is extracted into a directory, and {dst} is not one")]
    StreamNeedsDirectory { dst: String },
}

impl CpError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            CpError::SourceNoName { src } => Some(format!("to copy its contents, use {src}/.")),
            CpError::ParentMissing { .. } | CpError::DestinationDirectoryMissing { .. } => Some(
                "create the directory first, e.g. with `banger vm exec NAME -- mkdir -p DIR`"
                    .into(),
            ),
            CpError::DirectoryOntoFile { .. } => {
                Some("name a directory, or a path that does not exist yet".into())
            }
            _ => None,
        }
    }

    /// Whether something named does not exist (exit code 4) rather than being the wrong kind.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            CpError::SourceMissing { .. }
                | CpError::DestinationDirectoryMissing { .. }
                | CpError::ParentMissing { .. }
        )
    }
}

/// What a path is, as far as the rules care. A symlink counts as what it points at for a
/// destination (a copy goes through it, as `docker cp` resolves the destination), and as a
/// file for a source (the link itself is copied) unless the source path ends with `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    File,
    Directory,
}

/// One side of a copy: the path as the user wrote it (`dev:/root/x`, `./x`) for messages, the
/// path on its machine, and what is there.
#[derive(Debug, Clone)]
pub struct Side<'a> {
    pub shown: &'a str,
    pub path: &'a str,
    pub kind: Kind,
}

/// Where to extract and what the archive's top entry is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// An existing directory on the receiving side.
    pub dir: String,
    pub top: TopName,
}

/// Whether the path asks for a directory's contents (`SRC/.`, or `.` itself).
pub fn means_contents(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// Whether the path insists on a directory (a trailing `/` or `/.`).
pub fn insists_on_directory(path: &str) -> bool {
    path.ends_with('/') || means_contents(path)
}

/// The last component, ignoring trailing `/` and `/.`.
pub fn base_name(path: &str) -> Option<&str> {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_suffix("/.") {
            p = rest;
        } else if p.len() > 1
            && let Some(rest) = p.strip_suffix('/')
        {
            p = rest;
        } else {
            break;
        }
    }
    let name = p.rsplit('/').next().unwrap_or(p);
    (!name.is_empty() && name != "." && name != ".." && name != "/").then_some(name)
}

/// The directory holding `path` (`.` for a bare relative name).
pub fn parent(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => "/".into(),
        Some(i) => trimmed[..i].into(),
        None if path.starts_with('/') => "/".into(),
        None => ".".into(),
    }
}

/// Applies `docker cp`'s rules. `parent_is_directory` is asked only when the destination is
/// missing.
pub fn plan(
    src: &Side<'_>,
    dst: &Side<'_>,
    parent_is_directory: impl FnOnce(&str) -> bool,
) -> Result<Plan, CpError> {
    let shown_src = || src.shown.to_owned();
    let shown_dst = || dst.shown.to_owned();
    match src.kind {
        Kind::Missing => return Err(CpError::SourceMissing { src: shown_src() }),
        Kind::File if insists_on_directory(src.path) => {
            return Err(CpError::SourceNotDirectory { src: shown_src() });
        }
        _ => {}
    }
    let own_name = || {
        base_name(src.path)
            .map(|n| TopName::Named(n.to_owned()))
            .ok_or_else(|| CpError::SourceNoName { src: shown_src() })
    };
    match dst.kind {
        Kind::Directory => {
            let top = if src.kind == Kind::Directory && means_contents(src.path) {
                TopName::Contents
            } else {
                own_name()?
            };
            Ok(Plan {
                dir: dst.path.to_owned(),
                top,
            })
        }
        Kind::File if insists_on_directory(dst.path) => {
            Err(CpError::DestinationNotDirectory { dst: shown_dst() })
        }
        Kind::File if src.kind == Kind::Directory => Err(CpError::DirectoryOntoFile {
            src: shown_src(),
            dst: shown_dst(),
        }),
        Kind::Missing if insists_on_directory(dst.path) => {
            Err(CpError::DestinationDirectoryMissing { dst: shown_dst() })
        }
        Kind::File | Kind::Missing => {
            let dir = parent(dst.path);
            if dst.kind == Kind::Missing && !parent_is_directory(&dir) {
                return Err(CpError::ParentMissing {
                    dst: shown_dst(),
                    parent: dir,
                });
            }
            let name = base_name(dst.path)
                .ok_or_else(|| CpError::DestinationNotDirectory { dst: shown_dst() })?;
            Ok(Plan {
                dir,
                top: TopName::Named(name.to_owned()),
            })
        }
    }
}

/// `path` without trailing `/` and `/.`, to stat: `x.txt/` of a file is "not a directory" to
/// the kernel, and the rules want to know it is a file, to say so.
pub fn bare(path: &str) -> &str {
    let mut bare = path;
    while bare.len() > 1 {
        match bare.strip_suffix("/.").or_else(|| bare.strip_suffix('/')) {
            Some(rest) if !rest.is_empty() => bare = rest,
            _ => break,
        }
    }
    bare
}

/// What a host path is, for either side of a copy (`as_source` copies a symlink itself).
pub fn local_kind(path: &str, as_source: bool) -> Kind {
    let path = if path.is_empty() { "." } else { path };
    let bare = bare(path);
    let meta = if as_source && !insists_on_directory(path) {
        std::fs::symlink_metadata(bare)
    } else {
        std::fs::metadata(bare)
    };
    match meta {
        Ok(m) if m.is_dir() => Kind::Directory,
        Ok(_) => Kind::File,
        Err(_) => Kind::Missing,
    }
}

/// A guest path as the agent wants it: absolute, relative ones taken from `/root` (the
/// home directory `vm ssh` and `vm exec` start in); an empty path is `/root/`.
pub fn guest_path(path: &str) -> String {
    match path {
        "" => "/root/".into(),
        p if p.starts_with('/') => p.into(),
        p => format!("/root/{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn side(path: &str, kind: Kind) -> Side<'_> {
        Side {
            shown: path,
            path,
            kind,
        }
    }

    fn named(n: &str) -> TopName {
        TopName::Named(n.into())
    }

    /// `docker cp`'s documented cases, as decisions.
    #[test]
    fn the_rule_table() {
        use Kind::*;
        let ok = |dir: &str, top: TopName| {
            Ok(Plan {
                dir: dir.into(),
                top,
            })
        };
        /// (SRC, its kind, DST, its kind, whether DST's parent is a directory, the decision)
        type Case<'a> = (&'a str, Kind, &'a str, Kind, bool, Result<Plan, CpError>);
        let cases: Vec<Case<'_>> = vec![
            // A file.
            (
                "/h/x.txt",
                File,
                "/root/x.txt",
                Missing,
                true,
                ok("/root", named("x.txt")),
            ),
            (
                "x.txt",
                File,
                "y.txt",
                Missing,
                true,
                ok(".", named("y.txt")),
            ),
            (
                "/h/x.txt",
                File,
                "/root/new/",
                Missing,
                true,
                Err(CpError::DestinationDirectoryMissing {
                    dst: "/root/new/".into(),
                }),
            ),
            (
                "/h/x.txt",
                File,
                "/root/y.txt",
                File,
                true,
                ok("/root", named("y.txt")),
            ),
            (
                "/h/x.txt",
                File,
                "/root",
                Directory,
                true,
                ok("/root", named("x.txt")),
            ),
            (
                "/h/x.txt",
                File,
                "/root/",
                Directory,
                true,
                ok("/root/", named("x.txt")),
            ),
            (
                "/h/x.txt",
                File,
                "/root/y.txt/",
                File,
                true,
                Err(CpError::DestinationNotDirectory {
                    dst: "/root/y.txt/".into(),
                }),
            ),
            (
                "/h/x.txt/",
                File,
                "/root",
                Directory,
                true,
                Err(CpError::SourceNotDirectory {
                    src: "/h/x.txt/".into(),
                }),
            ),
            (
                "/h/x.txt",
                File,
                "/nope/x.txt",
                Missing,
                false,
                Err(CpError::ParentMissing {
                    dst: "/nope/x.txt".into(),
                    parent: "/nope".into(),
                }),
            ),
            // A directory.
            (
                "/h/src",
                Directory,
                "/root/dst",
                Missing,
                true,
                ok("/root", named("dst")),
            ),
            (
                "/h/src/.",
                Directory,
                "/root/dst",
                Missing,
                true,
                ok("/root", named("dst")),
            ),
            (
                "/h/src",
                Directory,
                "/root/f",
                File,
                true,
                Err(CpError::DirectoryOntoFile {
                    src: "/h/src".into(),
                    dst: "/root/f".into(),
                }),
            ),
            (
                "/h/src",
                Directory,
                "/root",
                Directory,
                true,
                ok("/root", named("src")),
            ),
            (
                "/h/src/",
                Directory,
                "/root",
                Directory,
                true,
                ok("/root", named("src")),
            ),
            (
                "/h/src/.",
                Directory,
                "/root",
                Directory,
                true,
                ok("/root", TopName::Contents),
            ),
            (
                ".",
                Directory,
                "/root",
                Directory,
                true,
                ok("/root", TopName::Contents),
            ),
            (
                "/h/src",
                Directory,
                "/nope/dst",
                Missing,
                false,
                Err(CpError::ParentMissing {
                    dst: "/nope/dst".into(),
                    parent: "/nope".into(),
                }),
            ),
            (
                "/",
                Directory,
                "/root",
                Directory,
                true,
                Err(CpError::SourceNoName { src: "/".into() }),
            ),
            // A missing source is named.
            (
                "dev:/root/nope",
                Missing,
                "/tmp",
                Directory,
                true,
                Err(CpError::SourceMissing {
                    src: "dev:/root/nope".into(),
                }),
            ),
        ];
        for (src, sk, dst, dk, parent_ok, want) in cases {
            let got = plan(&side(src, sk), &side(dst, dk), |_| parent_ok);
            assert_eq!(got, want, "{src} ({sk:?}) -> {dst} ({dk:?})");
        }
    }

    #[test]
    fn path_pieces() {
        assert_eq!(base_name("/a/b/"), Some("b"));
        assert_eq!(base_name("/a/b/."), Some("b"));
        assert_eq!(base_name("b"), Some("b"));
        assert_eq!(base_name("/"), None);
        assert_eq!(base_name("."), None);
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("a"), ".");
        assert_eq!(parent("a/b/"), "a");
        assert_eq!(guest_path(""), "/root/");
        assert_eq!(guest_path("x"), "/root/x");
        assert_eq!(guest_path("/etc"), "/etc");
    }

    /// Runs a copy between two host directories the way `vm cp` runs one in either direction
    /// (the sending side packs with the plan's top name, the receiving side unpacks into the
    /// plan's directory) and returns the plan's error, if any.
    fn copy(src: &Path, dst: &Path) -> Result<(), CpError> {
        let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
        let plan = plan(
            &side(s, local_kind(s, true)),
            &side(d, local_kind(d, false)),
            |p| local_kind(p, false) == Kind::Directory,
        )?;
        let tar = banger_agent_protocol::archive::pack_as(src, &plan.top, Vec::new()).unwrap();
        banger_agent_protocol::archive::unpack(&tar[..], Path::new(&plan.dir)).unwrap();
        Ok(())
    }

    /// The outcomes a user sees, on a real filesystem, for the cases of the issue and
    /// docker's table: a file copied to a new name is that file (not a directory holding it),
    /// copying it again overwrites it, and so on.
    #[test]
    fn copies_land_where_docker_cp_puts_them() {
        let t = tempfile::tempdir().unwrap();
        let p = |s: &str| t.path().join(s);
        fs::write(p("x.txt"), "one").unwrap();
        fs::set_permissions(p("x.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::create_dir_all(p("src/sub")).unwrap();
        fs::write(p("src/sub/a"), "a").unwrap();
        fs::create_dir(p("into")).unwrap();

        // File to a new name, then again over it.
        copy(&p("x.txt"), &p("copy.txt")).unwrap();
        assert_eq!(fs::read_to_string(p("copy.txt")).unwrap(), "one");
        assert_eq!(
            fs::metadata(p("copy.txt")).unwrap().permissions().mode() & 0o777,
            0o640
        );
        fs::write(p("x.txt"), "two").unwrap();
        copy(&p("x.txt"), &p("copy.txt")).unwrap();
        assert_eq!(fs::read_to_string(p("copy.txt")).unwrap(), "two");

        // File into a directory.
        copy(&p("x.txt"), &p("into")).unwrap();
        assert_eq!(fs::read_to_string(p("into/x.txt")).unwrap(), "two");

        // Directory to a new name, into a directory, and its contents.
        copy(&p("src"), &p("renamed")).unwrap();
        assert_eq!(fs::read_to_string(p("renamed/sub/a")).unwrap(), "a");
        copy(&p("src"), &p("into")).unwrap();
        assert_eq!(fs::read_to_string(p("into/src/sub/a")).unwrap(), "a");
        copy(&p("src/."), &p("into")).unwrap();
        assert_eq!(fs::read_to_string(p("into/sub/a")).unwrap(), "a");

        // The refusals.
        let err = copy(&p("src"), &p("copy.txt")).unwrap_err();
        assert!(matches!(err, CpError::DirectoryOntoFile { .. }), "{err}");
        let err = copy(&p("x.txt"), &p("missing/")).unwrap_err();
        assert!(
            matches!(err, CpError::DestinationDirectoryMissing { .. }),
            "{err}"
        );
        let err = copy(&p("x.txt"), &p("no/such/x.txt")).unwrap_err();
        assert!(matches!(err, CpError::ParentMissing { .. }), "{err}");
        let err = copy(&p("nope"), &p("into")).unwrap_err();
        assert!(err.to_string().ends_with("nope does not exist"), "{err}");
    }
}
