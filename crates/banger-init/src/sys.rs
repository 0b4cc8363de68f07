//! Every side effect of the init — mounts, module loading, netlink, the root switch, exec,
//! power-off — behind the [`Sys`] trait, so the boot sequence in [`crate::boot`] runs on the
//! host against a recording fake. [`RealSys`] is the Linux implementation the guest uses.

use std::ffi::CString;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use crate::netlink;

/// One `mount(2)` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub read_only: bool,
    /// `nosuid,nodev` (and `noexec` where asked), for the pseudo filesystems.
    pub restricted: bool,
    pub noexec: bool,
    pub data: String,
}

impl Mount {
    pub fn new(source: &str, target: &str, fstype: &str) -> Mount {
        Mount {
            source: source.to_owned(),
            target: target.to_owned(),
            fstype: fstype.to_owned(),
            read_only: false,
            restricted: false,
            noexec: false,
            data: String::new(),
        }
    }

    pub fn read_only(mut self) -> Mount {
        self.read_only = true;
        self
    }

    pub fn restricted(mut self, noexec: bool) -> Mount {
        self.restricted = true;
        self.noexec = noexec;
        self
    }

    pub fn data(mut self, data: &str) -> Mount {
        self.data = data.to_owned();
        self
    }
}

/// As `mount -t TYPE -o OPTIONS SOURCE TARGET` would say it.
impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut options = Vec::new();
        if self.read_only {
            options.push("ro");
        }
        if self.restricted {
            options.extend(["nosuid", "nodev"]);
        }
        if self.noexec {
            options.push("noexec");
        }
        if !self.data.is_empty() {
            options.push(&self.data);
        }
        write!(f, "mount -t {}", self.fstype)?;
        if !options.is_empty() {
            write!(f, " -o {}", options.join(","))?;
        }
        write!(f, " {} {}", self.source, self.target)
    }
}

/// The init's window on the kernel.
pub trait Sys {
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()>;
    fn mount(&mut self, mount: &Mount) -> io::Result<()>;
    /// `mount --move from to`.
    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    fn read_to_string(&mut self, path: &Path) -> io::Result<String>;
    /// Creates or replaces a file (mode 0644).
    fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()>;
    /// Creates one directory with these permission bits; an existing one is left as it is.
    fn make_dir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates or replaces a file with these permission bits, atomically (a new file renamed
    /// over the old one), owned by root.
    fn install_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()>;
    /// The first `len` bytes of a file (fewer when it is shorter).
    fn read_head(&mut self, path: &Path, len: usize) -> io::Result<Vec<u8>>;
    /// Whether `path` exists, following symlinks.
    fn exists(&mut self, path: &Path) -> bool;
    /// Entry names of a directory, sorted.
    fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>>;
    fn remove_tree(&mut self, path: &Path) -> io::Result<()>;
    /// `finit_module` on the file; `AlreadyExists` when the module is loaded already.
    fn load_module(&mut self, path: &Path) -> io::Result<()>;
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    fn link_up(&mut self, ifindex: u32) -> io::Result<()>;
    fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()>;
    fn add_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> io::Result<()>;
    fn chdir(&mut self, path: &Path) -> io::Result<()>;
    fn chroot(&mut self, path: &Path) -> io::Result<()>;
    /// Makes sure stdin/stdout/stderr are the console (after `/dev` is mounted).
    fn ensure_console(&mut self);
    /// Writes one line to the console.
    fn console(&mut self, line: &str);
    /// Time since the kernel started.
    fn uptime(&mut self) -> Duration;
    fn sleep(&mut self, duration: Duration);
    /// Replaces the process with `path`; returns only on failure.
    fn exec(&mut self, path: &str, args: &[String]) -> io::Error;
    /// Syncs and ends the machine (a reset, which ends the VMM); returns only on failure.
    fn end_machine(&mut self) -> io::Error;
}

/// The real thing: Linux system calls.
#[derive(Debug, Default)]
pub struct RealSys {
    netlink: Option<netlink::Socket>,
}

impl RealSys {
    pub fn new() -> Self {
        RealSys::default()
    }

    fn netlink_request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        let socket = match &mut self.netlink {
            Some(socket) => socket,
            None => self.netlink.insert(netlink::Socket::open()?),
        };
        socket.request(build)
    }
}

impl Sys for RealSys {
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn make_dir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        match fs::DirBuilder::new().mode(mode).create(path) {
            // The umask must not narrow what the drive asked for.
            Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn install_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut new = path.as_os_str().to_owned();
        new.push(".banger-new");
        let new = Path::new(&new);
        let _ = fs::remove_file(new);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(new)?;
        file.write_all(contents)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        drop(file);
        fs::rename(new, path)
    }

    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        use rustix::mount::MountFlags;
        let mut flags = MountFlags::empty();
        if m.read_only {
            flags |= MountFlags::RDONLY;
        }
        if m.restricted {
            flags |= MountFlags::NOSUID | MountFlags::NODEV;
        }
        if m.noexec {
            flags |= MountFlags::NOEXEC;
        }
        let data = CString::new(m.data.as_str())?;
        rustix::mount::mount(
            m.source.as_str(),
            m.target.as_str(),
            m.fstype.as_str(),
            flags,
            Some(data.as_c_str()),
        )?;
        Ok(())
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(rustix::mount::mount_move(from, to)?)
    }

    fn write_file(&mut self, path: &Path, contents: &[u8]) -> io::Result<()> {
        fs::write(path, contents)
    }

    fn read_to_string(&mut self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn read_head(&mut self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        fs::File::open(path)?
            .take(len as u64)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn exists(&mut self, path: &Path) -> bool {
        path.exists()
    }

    fn list_dir(&mut self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    fn remove_tree(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }

    fn load_module(&mut self, path: &Path) -> io::Result<()> {
        let file = fs::File::open(path)?;
        let params = c"";
        // SAFETY: finit_module reads the module from a file descriptor we own and keep open
        // for the call, and a NUL-terminated parameter string that outlives the call; it
        // writes no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        Ok(rustix::system::sethostname(name.as_bytes())?)
    }

    fn link_up(&mut self, ifindex: u32) -> io::Result<()> {
        self.netlink_request(|seq| netlink::link_up(seq, ifindex))
    }

    fn add_address(
        &mut self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
        broadcast: Ipv4Addr,
    ) -> io::Result<()> {
        self.netlink_request(|seq| {
            netlink::add_address(seq, ifindex, address, prefix_len, broadcast)
        })
    }

    fn add_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> io::Result<()> {
        self.netlink_request(|seq| netlink::add_default_route(seq, ifindex, gateway))
    }

    fn chdir(&mut self, path: &Path) -> io::Result<()> {
        Ok(rustix::process::chdir(path)?)
    }

    fn chroot(&mut self, path: &Path) -> io::Result<()> {
        Ok(rustix::process::chroot(path)?)
    }

    fn ensure_console(&mut self) {
        // The kernel opens /dev/console for init only if the initramfs has it; banger's has,
        // but an init without a console would fail silently, so check.
        if rustix::io::fcntl_getfd(rustix::stdio::stderr()).is_ok() {
            return;
        }
        if let Ok(console) = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            let _ = rustix::stdio::dup2_stdin(&console);
            let _ = rustix::stdio::dup2_stdout(&console);
            let _ = rustix::stdio::dup2_stderr(&console);
        }
    }

    fn console(&mut self, line: &str) {
        let mut err = io::stderr().lock();
        let _ = writeln!(err, "{line}");
        let _ = err.flush();
    }

    fn uptime(&mut self) -> Duration {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn exec(&mut self, path: &str, args: &[String]) -> io::Error {
        let Ok(program) = CString::new(path) else {
            return io::Error::new(io::ErrorKind::InvalidInput, "NUL in the init path");
        };
        let mut argv = vec![program.clone()];
        for arg in args {
            match CString::new(arg.as_str()) {
                Ok(arg) => argv.push(arg),
                Err(_) => {
                    return io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument");
                }
            }
        }
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: `program` and every `argv` string are NUL-terminated CStrings alive for the
        // call, and `ptrs` is a NULL-terminated array of pointers to them. execv only returns
        // on failure, and then has changed nothing.
        unsafe {
            libc::execv(program.as_ptr(), ptrs.as_ptr());
        }
        io::Error::last_os_error()
    }

    fn end_machine(&mut self) -> io::Error {
        use rustix::system::{RebootCommand, reboot};
        rustix::fs::sync();
        // A reset, not a power-off: Firecracker on x86 has no power-off device (the kernel
        // would only halt, and the VMM would live on), but exits when the guest resets the
        // machine (`reboot=k`), as QEMU does with -no-reboot.
        let err = match reboot(RebootCommand::Restart) {
            Ok(()) => io::Error::other("the reset returned"),
            Err(e) => e.into(),
        };
        let _ = reboot(RebootCommand::PowerOff);
        err
    }
}
