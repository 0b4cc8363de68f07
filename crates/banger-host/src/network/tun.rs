//! Persistent taps made in-process through `/dev/net/tun`, for a daemon that is root: the
//! device is created with `TUNSETIFF` (`IFF_TAP | IFF_NO_PI`, as `ip tuntap add ... mode tap`
//! makes it), given to its owner with `TUNSETOWNER` so that an unprivileged VMM may open it, and
//! kept after the descriptor closes with `TUNSETPERSIST`. Until that last step succeeds the tap
//! lives only as long as the descriptor, so a failure half-way leaves no device behind.
//!
//! The device is created in the network namespace of the calling thread.

use std::io;

use rustix::fs::{Mode, OFlags};
use rustix::ioctl::{IntegerSetter, Opcode, Updater, ioctl, opcode};

const TUN_DEVICE: &str = "/dev/net/tun";

// linux/if_tun.h
const TUNSETIFF: Opcode = opcode::write::<std::ffi::c_int>(b'T', 202);
const TUNSETPERSIST: Opcode = opcode::write::<std::ffi::c_int>(b'T', 203);
const TUNSETOWNER: Opcode = opcode::write::<std::ffi::c_int>(b'T', 204);
const TUNSETGROUP: Opcode = opcode::write::<std::ffi::c_int>(b'T', 206);
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
/// Fail instead of attaching to a device of that name that already exists.
const IFF_TUN_EXCL: u16 = 0x8000;

/// Linux's `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags at the start of
/// the 24-byte union (40 bytes in all on 64-bit Linux).
#[repr(C, align(8))]
struct IfReq {
    name: [u8; 16],
    flags: u16,
    _rest: [u8; 22],
}

/// `/dev/net/tun` opened, and the `struct ifreq` that names tap `name` with `flags`, ready for
/// TUNSETIFF.
fn open_tap(name: &str, flags: u16) -> io::Result<(std::os::fd::OwnedFd, IfReq)> {
    let mut request = IfReq {
        name: [0; 16],
        flags,
        _rest: [0; 22],
    };
    // One byte is left for the NUL the kernel expects.
    if name.is_empty() || name.len() >= request.name.len() || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a valid interface name"),
        ));
    }
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    let tun = rustix::fs::open(TUN_DEVICE, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{TUN_DEVICE}: {e}")))?;
    Ok((tun, request))
}

/// Creates persistent tap `name` owned by user `owner`. A link of that name that already
/// exists is an error (`EBUSY`), never reused.
pub(crate) fn create_tap(name: &str, owner: u32) -> io::Result<()> {
    let (tun, mut request) = open_tap(name, IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL)?;
    // SAFETY: TUNSETIFF reads and writes back a `struct ifreq`, which `IfReq` lays out in full
    // (name, flags, the rest of the union zeroed) and which outlives the call.
    unsafe { ioctl(&tun, Updater::<TUNSETIFF, IfReq>::new(&mut request)) }?;
    // SAFETY: TUNSETOWNER takes the uid itself as the argument, not a pointer.
    unsafe {
        ioctl(
            &tun,
            IntegerSetter::<TUNSETOWNER>::new_usize(owner as usize),
        )
    }?;
    // SAFETY: TUNSETPERSIST takes the flag itself as the argument, not a pointer.
    unsafe { ioctl(&tun, IntegerSetter::<TUNSETPERSIST>::new_usize(1)) }?;
    drop(tun);
    Ok(())
}

/// Gives the existing persistent tap `name` to `uid` and `gid`, so that a VMM running as them
/// (a jailed Firecracker) may open it. Needs root; the tap stays persistent.
pub fn give_tap(name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let (tun, mut request) = open_tap(name, IFF_TAP | IFF_NO_PI)?;
    // SAFETY: as in `create_tap`: a whole `struct ifreq` that outlives the call. Without
    // IFF_TUN_EXCL this attaches to the existing device of that name.
    unsafe { ioctl(&tun, Updater::<TUNSETIFF, IfReq>::new(&mut request)) }?;
    // SAFETY: TUNSETOWNER and TUNSETGROUP take the id itself as the argument, not a pointer.
    unsafe { ioctl(&tun, IntegerSetter::<TUNSETOWNER>::new_usize(uid as usize)) }?;
    // SAFETY: as above.
    unsafe { ioctl(&tun, IntegerSetter::<TUNSETGROUP>::new_usize(gid as usize)) }?;
    drop(tun);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_whole_ifreq() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn names_the_kernel_cannot_take_are_refused_before_the_device_is_opened() {
        for name in ["", "bt-0123456789abc", "bt-\0"] {
            let error = create_tap(name, 0).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
