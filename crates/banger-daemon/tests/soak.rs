//! The soak test: after a warm-up, a real bangerd on the real Firecracker goes through many
//! create/start/stop/delete cycles (see `soak/cycles.rs`) and must end where it began: no VM
//! directory, socket, Firecracker or tap left, file descriptors and threads back to what they
//! were, memory and the state database grown by no more than a small bound (once the warm-up
//! has filled what the daemon keeps by design). No timing is
//! asserted; `cargo bench -p banger-daemon --bench soak` runs a long soak and prints figures.
//! `SOAK_CYCLES` sets the number of cycles (default 40). Needs root, iproute2, nftables and
//! Firecracker; prints a visible `SKIP:` line and passes without them.

#[path = "soak/cycles.rs"]
mod soak;
mod support;

use std::time::Duration;

#[test]
fn many_create_start_stop_delete_cycles_leak_nothing() {
    let n = banger_test_support::bench_setting("SOAK_CYCLES", 40);
    soak::in_a_namespace("banger-test-", async |firecracker| {
        let dir = tempfile::tempdir().unwrap();
        let (daemon, client, paths, _vmms) = soak::daemon(dir.path(), &firecracker).await;
        // Idle blocking threads of the daemon's runtime end 10 s after their last task.
        let settle = Duration::from_secs(11);
        // The warm-up fills what the daemon keeps by design: the last 200 finished operations
        // (three a cycle), the disk pool, the spare Firecracker.
        soak::cycles(&client, 70).await;
        let before = soak::read(&paths, &firecracker, settle).await;
        let took = soak::cycles(&client, n).await;
        let after = soak::read(&paths, &firecracker, settle).await;
        println!("soak: {n} cycles in {:.1}s", took.as_secs_f64());
        println!("  before: {before}");
        println!("  after:  {after}");

        assert_eq!(after.vm_dirs, 0, "{after}");
        assert_eq!(after.taps, 0, "{after}");
        assert_eq!(after.sockets, before.sockets, "{before} / {after}");
        assert_eq!(
            after.firecrackers, before.firecrackers,
            "{before} / {after}"
        );
        assert!(after.fds <= before.fds + 2, "{before} / {after}");
        assert!(after.threads <= before.threads + 2, "{before} / {after}");
        assert!(
            after.rss_kib <= before.rss_kib + 8 * 1024,
            "{before} / {after}"
        );
        assert!(
            after.db_bytes <= before.db_bytes + 256 * 1024,
            "{before} / {after}"
        );
        assert!(after.wal_bytes <= 8 << 20, "{after}");
        daemon.stop().await;
    });
}
