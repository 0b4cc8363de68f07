//! The `banger-init` binary: `/init` in banger's initramfs. All the work is in the library;
//! this runs it with the real system calls and makes sure that whatever happens — an error or
//! a panic — PID 1 neither exits (the kernel would panic) nor hangs: it says what failed and
//! powers the VM off.

use banger_init::boot;
use banger_init::sys::{RealSys, Sys};

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let mut sys = RealSys::new();
        sys.console(&boot::failure_line(&format!("internal error: {info}")));
        let _ = sys.end_machine();
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sys = RealSys::new();
    let error = boot::run(&mut sys, &args);
    boot::fail(&mut sys, &error);
    // Powering off failed too; PID 1 must not exit.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
