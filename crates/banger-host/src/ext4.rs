//! The e2fsprogs command lines banger runs on ext4 image files: `mkfs.ext4` makes VM disks and
//! root filesystems, `debugfs` reads and edits a filesystem without mounting it, `e2fsck` and
//! `resize2fs` check and grow a work disk, `dumpe2fs` reads a superblock. Each builder gives
//! its [`CommandSpec`] for the caller's [`CommandRunner`](crate::CommandRunner), or its program
//! and argument list for a caller that runs it another way (behind `sudo -n`). The program
//! names are the tools' own, so fakes and `banger doctor` know them by those names.

use std::path::Path;

use crate::runner::CommandSpec;

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `mkfs.ext4 -q -F [options] image`: a new ext4 filesystem filling the file `image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mkfs {
    image: String,
    label: Option<String>,
    reserved_percent: Option<u32>,
    bytes_per_inode: Option<u64>,
    contents: Option<String>,
    extended: Vec<&'static str>,
}

impl Mkfs {
    pub const PROGRAM: &'static str = "mkfs.ext4";

    /// Quiet, and forced: `image` is a regular file, which mkfs would otherwise ask about.
    pub fn new(image: &Path) -> Self {
        Mkfs {
            image: path_arg(image),
            label: None,
            reserved_percent: None,
            bytes_per_inode: None,
            contents: None,
            extended: Vec::new(),
        }
    }

    /// The volume label (`-L`), by which the guest finds the disk.
    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.to_owned());
        self
    }

    /// Blocks reserved for root, in percent (`-m`).
    pub fn reserved_percent(mut self, percent: u32) -> Self {
        self.reserved_percent = Some(percent);
        self
    }

    /// One inode per this many bytes (`-i`).
    pub fn bytes_per_inode(mut self, bytes: u64) -> Self {
        self.bytes_per_inode = Some(bytes);
        self
    }

    /// Fills the new filesystem with a copy of `dir` (`-d`).
    pub fn contents(mut self, dir: &Path) -> Self {
        self.contents = Some(path_arg(dir));
        self
    }

    /// The root directory belongs to root whoever runs mkfs (`-E root_owner=0:0`).
    pub fn root_owner(mut self) -> Self {
        self.extended.push("root_owner=0:0");
        self
    }

    /// Leaves the journal unwritten (`-E lazy_journal_init=1`), for a new sparse file whose
    /// journal already reads as zeros.
    pub fn lazy_journal_init(mut self) -> Self {
        self.extended.push("lazy_journal_init=1");
        self
    }

    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-q".to_owned(), "-F".to_owned()];
        if let Some(label) = &self.label {
            args.extend(["-L".to_owned(), label.clone()]);
        }
        if let Some(percent) = self.reserved_percent {
            args.extend(["-m".to_owned(), percent.to_string()]);
        }
        if let Some(bytes) = self.bytes_per_inode {
            args.extend(["-i".to_owned(), bytes.to_string()]);
        }
        if let Some(dir) = &self.contents {
            args.extend(["-d".to_owned(), dir.clone()]);
        }
        if !self.extended.is_empty() {
            args.extend(["-E".to_owned(), self.extended.join(",")]);
        }
        args.push(self.image.clone());
        args
    }

    pub fn command(&self) -> CommandSpec {
        CommandSpec::new(Self::PROGRAM).args(self.args())
    }
}

/// `debugfs`: one read-only request whose answer is on stdout, or a script of commands that
/// change the filesystem. debugfs exits 0 even when a request fails; it complains on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debugfs {
    image: String,
    kind: DebugfsKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DebugfsKind {
    Request(String),
    Script(String),
}

impl Debugfs {
    pub const PROGRAM: &'static str = "debugfs";

    /// `debugfs -R request image`, the filesystem opened read-only.
    pub fn request(image: &Path, request: impl Into<String>) -> Self {
        Debugfs {
            image: path_arg(image),
            kind: DebugfsKind::Request(request.into()),
        }
    }

    /// The contents of the file at `path` (absolute inside the filesystem): `cat path`.
    pub fn cat(image: &Path, path: &str) -> Self {
        Debugfs::request(image, format!("cat {path}"))
    }

    /// The inode of `path` (mode, owner, size...): `stat "path"`.
    pub fn stat(image: &Path, path: &str) -> Self {
        Debugfs::request(image, format!("stat \"{path}\""))
    }

    /// `debugfs -w -f - image` with `commands` (one a line) on stdin, the filesystem opened
    /// read-write.
    pub fn script(image: &Path, commands: impl Into<String>) -> Self {
        Debugfs {
            image: path_arg(image),
            kind: DebugfsKind::Script(commands.into()),
        }
    }

    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = match &self.kind {
            DebugfsKind::Request(request) => vec!["-R".to_owned(), request.clone()],
            DebugfsKind::Script(_) => ["-w", "-f", "-"].map(str::to_owned).to_vec(),
        };
        args.push(self.image.clone());
        args
    }

    /// What a script feeds debugfs on stdin; nothing for a request.
    pub fn stdin(&self) -> Option<&str> {
        match &self.kind {
            DebugfsKind::Request(_) => None,
            DebugfsKind::Script(commands) => Some(commands),
        }
    }

    pub fn command(&self) -> CommandSpec {
        let spec = CommandSpec::new(Self::PROGRAM).args(self.args());
        match self.stdin() {
            Some(commands) => spec.stdin(commands),
            None => spec,
        }
    }
}

/// `e2fsck`, always forced (`-f`): a clean flag is no proof for a file banger is about to
/// rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2fsck {
    image: String,
    preen: bool,
}

impl E2fsck {
    pub const PROGRAM: &'static str = "e2fsck";

    /// `e2fsck -fn image`: checks, changes nothing; any problem is a failure.
    pub fn check(image: &Path) -> Self {
        E2fsck {
            image: path_arg(image),
            preen: false,
        }
    }

    /// `e2fsck -f -p image`: fixes what is safe to fix unattended. Exit code 1 means it fixed
    /// something, which callers take as success.
    pub fn preen(image: &Path) -> Self {
        E2fsck {
            image: path_arg(image),
            preen: true,
        }
    }

    pub fn args(&self) -> Vec<String> {
        let flags: &[&str] = if self.preen { &["-f", "-p"] } else { &["-fn"] };
        let mut args: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        args.push(self.image.clone());
        args
    }

    pub fn command(&self) -> CommandSpec {
        CommandSpec::new(Self::PROGRAM).args(self.args())
    }
}

/// `resize2fs image`: grows the filesystem to fill its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resize2fs {
    image: String,
}

impl Resize2fs {
    pub const PROGRAM: &'static str = "resize2fs";

    pub fn fill(image: &Path) -> Self {
        Resize2fs {
            image: path_arg(image),
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec![self.image.clone()]
    }

    pub fn command(&self) -> CommandSpec {
        CommandSpec::new(Self::PROGRAM).args(self.args())
    }
}

/// `dumpe2fs -h image`: the superblock, as `Name: value` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dumpe2fs {
    image: String,
}

impl Dumpe2fs {
    pub const PROGRAM: &'static str = "dumpe2fs";

    pub fn header(image: &Path) -> Self {
        Dumpe2fs {
            image: path_arg(image),
        }
    }

    pub fn args(&self) -> Vec<String> {
        vec!["-h".to_owned(), self.image.clone()]
    }

    pub fn command(&self) -> CommandSpec {
        CommandSpec::new(Self::PROGRAM).args(self.args())
    }

    /// The value of the `field` line (`Filesystem volume name`, `Block count`...) of a header
    /// dumpe2fs printed, trimmed.
    pub fn field<'a>(output: &'a str, field: &str) -> Option<&'a str> {
        output
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':').map(str::trim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> &'static Path {
        Path::new("/state/vms/a b/overlay.ext4")
    }

    #[test]
    fn mkfs_alone_is_quiet_forced_and_ends_with_the_image() {
        assert_eq!(
            Mkfs::new(image()).args(),
            ["-q", "-F", "/state/vms/a b/overlay.ext4"]
        );
    }

    #[test]
    fn mkfs_options_come_in_one_order_whatever_order_they_are_given() {
        let mkfs = Mkfs::new(Path::new("/i/rootfs.ext4"))
            .root_owner()
            .contents(Path::new("/s/root"))
            .bytes_per_inode(8192)
            .reserved_percent(0)
            .label("banger-base");
        assert_eq!(
            mkfs.command().display(),
            "mkfs.ext4 -q -F -L banger-base -m 0 -i 8192 -d /s/root -E root_owner=0:0 \
             /i/rootfs.ext4"
        );
    }

    #[test]
    fn mkfs_extended_options_are_joined_in_one_e_argument() {
        let args = Mkfs::new(image())
            .label("banger-work")
            .root_owner()
            .lazy_journal_init()
            .args();
        assert_eq!(
            args,
            [
                "-q",
                "-F",
                "-L",
                "banger-work",
                "-E",
                "root_owner=0:0,lazy_journal_init=1",
                "/state/vms/a b/overlay.ext4"
            ]
        );
    }

    #[test]
    fn debugfs_requests_are_one_argument_and_open_the_image_read_only() {
        let cat = Debugfs::cat(image(), "/etc/inittab");
        assert_eq!(
            cat.args(),
            ["-R", "cat /etc/inittab", "/state/vms/a b/overlay.ext4"]
        );
        assert_eq!(cat.stdin(), None);
        assert_eq!(cat.command().stdin, None);
        assert_eq!(cat.command().program, "debugfs");
        assert_eq!(
            Debugfs::stat(image(), "upper/etc/my file").args()[1],
            "stat \"upper/etc/my file\""
        );
        assert_eq!(
            Debugfs::request(image(), "ls -l /").args()[..2],
            ["-R", "ls -l /"]
        );
    }

    #[test]
    fn a_debugfs_script_opens_the_image_read_write_and_comes_on_stdin() {
        let script = Debugfs::script(image(), "sif \"/a\" uid 0\n");
        assert_eq!(
            script.args(),
            ["-w", "-f", "-", "/state/vms/a b/overlay.ext4"]
        );
        assert_eq!(script.stdin(), Some("sif \"/a\" uid 0\n"));
        assert_eq!(
            script.command().stdin.as_deref(),
            Some(&b"sif \"/a\" uid 0\n"[..])
        );
    }

    #[test]
    fn e2fsck_checks_or_preens_always_forced() {
        assert_eq!(
            E2fsck::check(image()).command().display(),
            "e2fsck -fn '/state/vms/a b/overlay.ext4'"
        );
        assert_eq!(
            E2fsck::preen(image()).args(),
            ["-f", "-p", "/state/vms/a b/overlay.ext4"]
        );
    }

    #[test]
    fn resize2fs_and_dumpe2fs_take_the_image() {
        assert_eq!(
            Resize2fs::fill(image()).command().display(),
            "resize2fs '/state/vms/a b/overlay.ext4'"
        );
        assert_eq!(
            Dumpe2fs::header(image()).command().display(),
            "dumpe2fs -h '/state/vms/a b/overlay.ext4'"
        );
    }

    #[test]
    fn dumpe2fs_fields_are_read_by_their_whole_name() {
        let header = "dumpe2fs 1.47.0 (5-Feb-2023)\n\
                      Filesystem volume name:   banger-work\n\
                      Last mounted on:          <not available>\n\
                      Block count:              2048\n";
        assert_eq!(
            Dumpe2fs::field(header, "Filesystem volume name"),
            Some("banger-work")
        );
        assert_eq!(Dumpe2fs::field(header, "Block count"), Some("2048"));
        assert_eq!(Dumpe2fs::field(header, "Block"), None);
        assert_eq!(Dumpe2fs::field(header, "Inode count"), None);
    }
}
