//! A long soak of a real bangerd on the real Firecracker (see `tests/soak/cycles.rs`): after a
//! warm-up that fills what the daemon keeps by design, `SOAK_CYCLES` create/start/stop/delete
//! cycles (default 1000), with a reading of the daemon's memory, file descriptors, threads, the
//! state database and what is left on the host every `SOAK_EVERY` cycles (default 250). Prints
//! figures; asserts nothing (`tests/soak.rs` does). Needs root, iproute2, nftables and
//! Firecracker; prints `SKIP:` otherwise.

#[path = "../tests/soak/cycles.rs"]
mod soak;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

fn main() {
    let total = banger_test_support::bench_setting("SOAK_CYCLES", 1000);
    let every = banger_test_support::bench_setting("SOAK_EVERY", 250);
    soak::in_a_namespace("banger-bench-", async |firecracker| {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, client, paths, _vmms) = soak::daemon(dir.path(), &firecracker).await;
        let settle = Duration::from_secs(11);
        soak::cycles(&client, 70).await;
        println!(
            "soak: {total} create/start/stop/delete cycles on Firecracker (after 70 to warm up)"
        );
        println!(
            "  {:>6}  {}",
            0,
            soak::read(&paths, &firecracker, settle).await
        );
        let mut done = 0;
        let mut busy = Duration::ZERO;
        while done < total {
            let n = every.min(total - done);
            busy += soak::cycles(&client, n).await;
            done += n;
            println!(
                "  {done:>6}  {}",
                soak::read(&paths, &firecracker, settle).await
            );
        }
        println!(
            "  {:.0} ms a cycle (create with its start, stop, start, delete)",
            busy.as_secs_f64() * 1000.0 / total as f64
        );
        daemon.stop().await;
    });
}
