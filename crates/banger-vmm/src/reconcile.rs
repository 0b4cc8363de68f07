//! What a starting daemon does with the VMs its store says hold a VMM, decided as a pure
//! function of the records and of what the host shows ([`decide`]). The daemon gathers the
//! observations ([`crate::Firecracker::observe`], [`crate::Firecracker::scan`], and the same
//! for [`crate::Qemu`], merged with [`HostScan::merge`]), calls
//! [`decide`], and carries the actions out: adopting a VM keeps it running under the new
//! daemon; a VM whose VMM is gone is marked stopped and its resources released; VMM processes
//! and sockets no record owns are removed. Taps and nftables rules are the network's orphans and
//! are found by banger-host, from the same records.
//!
//! A restart never kills a VM that is running as recorded. Only a VMM that cannot be driven
//! (its API socket gone or silent, or never started) or whose VM the store says was stopping or
//! stopped is ended.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use banger_api::VmState;
use serde::{Deserialize, Serialize};

use crate::InstanceState;

/// What the store knows about one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub vm_id: String,
    pub state: VmState,
    pub pid: Option<u32>,
    pub api_socket: Option<PathBuf>,
    pub vsock_socket: Option<PathBuf>,
    /// The VM was starting from a snapshot and its guest had not yet taken its own identity
    /// (it still has the snapshot's address, hostname and agent token).
    #[serde(default)]
    pub identity_pending: bool,
}

/// What the host shows about a record's VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The pid is a live process.
    pub alive: bool,
    /// ... and it is the record's VMM (Firecracker or QEMU) serving the recorded API socket
    /// (not a reused pid).
    pub owned: bool,
    /// The API socket file exists.
    pub socket_exists: bool,
    /// What `GET /` answered, `None` when it did not.
    pub answer: Option<InstanceState>,
}

/// A VMM process (Firecracker, or QEMU with its QMP socket) found on the host, with the API
/// socket it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundProcess {
    pub pid: u32,
    pub api_socket: PathBuf,
}

/// Everything VMM-related found in the directory banger keeps VM sockets in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostScan {
    pub sockets: Vec<PathBuf>,
    pub processes: Vec<FoundProcess>,
}

impl HostScan {
    /// The Unix sockets in `socket_dir` and the processes `host` runs whose command line
    /// (`socket_of`, one backend's parser) names a control socket there. `socket_dir` must hold
    /// nothing but VM sockets (not the daemon's own).
    pub(crate) fn of(
        host: &dyn crate::host::ProcessHost,
        socket_dir: &Path,
        socket_of: impl Fn(&[std::ffi::OsString]) -> Option<PathBuf>,
    ) -> HostScan {
        let sockets = host.sockets_in(socket_dir).unwrap_or_default();
        let processes = host
            .processes()
            .into_iter()
            .filter_map(|(pid, argv)| {
                let api_socket = socket_of(&argv)?;
                api_socket
                    .starts_with(socket_dir)
                    .then_some(FoundProcess { pid, api_socket })
            })
            .collect();
        HostScan { sockets, processes }
    }

    /// Both scans of one socket directory as one: every backend lists its own processes and
    /// every socket, so a daemon running Firecracker and QEMU VMs merges the two before
    /// [`decide`].
    pub fn merge(mut self, other: HostScan) -> HostScan {
        self.sockets.extend(other.sockets);
        self.sockets.sort();
        self.sockets.dedup();
        self.processes.extend(other.processes);
        self.processes.sort_by_key(|p| p.pid);
        self.processes.dedup();
        self
    }
}

/// Why a VM is no longer running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The record has no pid or socket: the daemon died before the VMM started.
    NoProcess,
    /// The VMM process exited while no daemon watched.
    ProcessGone,
    /// The pid now belongs to another process.
    PidReused,
    /// The VMM runs but its API socket was removed, so it cannot be driven.
    SocketGone,
    /// The VMM runs but does not answer on its API socket.
    NotAnswering,
    /// The daemon died while configuring it: the instance never started.
    NeverStarted,
    /// The daemon died while stopping it; the stop is finished.
    StopInterrupted,
    /// The daemon died while restoring it from a snapshot, before its guest took its own
    /// identity: a guest with another VM's identity is not kept.
    RestoreInterrupted,
}

/// Why a VMM process is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// Its VM is being marked stopped (see the [`StopReason`] next to it).
    VmStopped,
    /// No record owns its API socket.
    Orphan,
}

/// One thing the daemon does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Keep the VM: watch its VMM again and record `state` (the VMM knows best whether it is
    /// paused).
    Adopt {
        vm_id: String,
        pid: u32,
        state: InstanceState,
    },
    /// Record the VM as stopped and release its host resources (tap, rules).
    MarkStopped { vm_id: String, reason: StopReason },
    /// End a VMM process (SIGKILL: nobody waits for its guest).
    Kill {
        pid: u32,
        api_socket: PathBuf,
        reason: KillReason,
    },
    /// Remove a socket file no adopted VM owns.
    RemoveSocket { path: PathBuf },
}

/// The actions that bring the host in line with `records`. `observations[i]` belongs to
/// `records[i]` (`None` when the record has no pid and socket to observe). Actions come in a
/// stable order: per record, then orphan processes by pid, then sockets by path; kills come
/// before the socket removals that follow from them.
pub fn decide(
    records: &[Record],
    observations: &[Option<Observation>],
    scan: &HostScan,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut kills: Vec<Action> = Vec::new();
    // API and vsock sockets of adopted VMs: everything else in the socket directory goes.
    let mut kept_sockets: Vec<&Path> = Vec::new();
    let mut handled_pids = BTreeSet::new();

    for (i, record) in records.iter().enumerate() {
        let observation = observations.get(i).copied().flatten();
        let expects_vmm = record.state.holds_resources();
        let (Some(pid), Some(api_socket), Some(seen)) =
            (record.pid, record.api_socket.as_ref(), observation)
        else {
            if expects_vmm {
                actions.push(stopped(record, StopReason::NoProcess));
            }
            continue;
        };
        let kill = |handled: &mut BTreeSet<u32>| {
            handled.insert(pid);
            Action::Kill {
                pid,
                api_socket: api_socket.clone(),
                reason: KillReason::VmStopped,
            }
        };

        if !seen.alive {
            if expects_vmm {
                actions.push(stopped(record, StopReason::ProcessGone));
            }
            continue;
        }
        if !seen.owned {
            // Someone else's process now: never touch it.
            if expects_vmm {
                actions.push(stopped(record, StopReason::PidReused));
            }
            continue;
        }
        // A live Firecracker serving this VM's socket.
        let reason = match (record.state, seen.socket_exists, seen.answer) {
            (state, _, _) if !expects_vmm => {
                // The store says stopped or failed: the VMM outlived the daemon that ended it.
                debug_assert!(!state.holds_resources());
                kills.push(kill(&mut handled_pids));
                continue;
            }
            (VmState::Stopping, _, _) => StopReason::StopInterrupted,
            (VmState::Starting, _, _) if record.identity_pending => StopReason::RestoreInterrupted,
            (_, false, _) => StopReason::SocketGone,
            (_, true, None) => StopReason::NotAnswering,
            (_, true, Some(InstanceState::NotStarted)) => StopReason::NeverStarted,
            (_, true, Some(state)) => {
                handled_pids.insert(pid);
                kept_sockets.push(api_socket);
                if let Some(vsock) = &record.vsock_socket {
                    kept_sockets.push(vsock);
                }
                actions.push(Action::Adopt {
                    vm_id: record.vm_id.clone(),
                    pid,
                    state,
                });
                continue;
            }
        };
        actions.push(stopped(record, reason));
        kills.push(kill(&mut handled_pids));
    }

    actions.extend(kills);

    let mut orphans: Vec<&FoundProcess> = scan
        .processes
        .iter()
        .filter(|p| !handled_pids.contains(&p.pid))
        .filter(|p| !kept_sockets.contains(&p.api_socket.as_path()))
        .collect();
    orphans.sort_by_key(|p| p.pid);
    actions.extend(orphans.into_iter().map(|p| Action::Kill {
        pid: p.pid,
        api_socket: p.api_socket.clone(),
        reason: KillReason::Orphan,
    }));

    let mut sockets: Vec<&PathBuf> = scan
        .sockets
        .iter()
        .filter(|path| !kept_sockets.iter().any(|kept| owns_socket(kept, path)))
        .collect();
    sockets.sort();
    sockets.dedup();
    actions.extend(
        sockets
            .into_iter()
            .map(|path| Action::RemoveSocket { path: path.clone() }),
    );
    actions
}

fn stopped(record: &Record, reason: StopReason) -> Action {
    Action::MarkStopped {
        vm_id: record.vm_id.clone(),
        reason,
    }
}

/// A VM owns its sockets and, for its vsock socket `v.sock`, the `v.sock_<port>` listeners of
/// guest-initiated connections.
fn owns_socket(kept: &Path, path: &Path) -> bool {
    if kept == path {
        return true;
    }
    let (Some(kept), Some(path)) = (kept.to_str(), path.to_str()) else {
        return false;
    };
    path.strip_prefix(kept)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "/run/banger/vms";

    fn sock(name: &str) -> PathBuf {
        Path::new(RUN).join(name)
    }

    fn record(vm: &str, state: VmState, pid: Option<u32>) -> Record {
        Record {
            vm_id: vm.into(),
            state,
            pid,
            api_socket: pid.map(|_| sock(&format!("{vm}.sock"))),
            vsock_socket: pid.map(|_| sock(&format!("{vm}.vsock"))),
            identity_pending: false,
        }
    }

    fn seen(alive: bool, owned: bool, socket: bool, answer: Option<InstanceState>) -> Observation {
        Observation {
            alive,
            owned,
            socket_exists: socket,
            answer,
        }
    }

    const RUNNING: Option<InstanceState> = Some(InstanceState::Running);
    const PAUSED: Option<InstanceState> = Some(InstanceState::Paused);
    const NOT_STARTED: Option<InstanceState> = Some(InstanceState::NotStarted);

    /// One record, observed, without anything else on the host: the action for that record.
    fn one(state: VmState, observation: Option<Observation>) -> Vec<Action> {
        let r = record("a", state, observation.map(|_| 100));
        decide(&[r], &[observation], &HostScan::default())
    }

    fn adopt(state: InstanceState) -> Action {
        Action::Adopt {
            vm_id: "a".into(),
            pid: 100,
            state,
        }
    }

    fn stop(reason: StopReason) -> Action {
        Action::MarkStopped {
            vm_id: "a".into(),
            reason,
        }
    }

    fn kill() -> Action {
        Action::Kill {
            pid: 100,
            api_socket: sock("a.sock"),
            reason: KillReason::VmStopped,
        }
    }

    #[test]
    fn decisions_for_one_record() {
        use VmState::*;
        #[rustfmt::skip]
        let table: Vec<(VmState, Option<Observation>, Vec<Action>)> = vec![
            // recorded   observed (alive, ours, socket, answer)     → actions
            (Running,  Some(seen(true, true, true, RUNNING)),      vec![adopt(InstanceState::Running)]),
            (Running,  Some(seen(true, true, true, PAUSED)),       vec![adopt(InstanceState::Paused)]),
            (Paused,   Some(seen(true, true, true, PAUSED)),       vec![adopt(InstanceState::Paused)]),
            (Starting, Some(seen(true, true, true, RUNNING)),      vec![adopt(InstanceState::Running)]),
            (Starting, Some(seen(true, true, true, NOT_STARTED)),  vec![stop(StopReason::NeverStarted), kill()]),
            (Running,  Some(seen(false, false, true, None)),       vec![stop(StopReason::ProcessGone)]),
            (Running,  Some(seen(true, false, false, None)),       vec![stop(StopReason::PidReused)]),
            (Running,  Some(seen(true, true, false, None)),        vec![stop(StopReason::SocketGone), kill()]),
            (Running,  Some(seen(true, true, true, None)),         vec![stop(StopReason::NotAnswering), kill()]),
            (Stopping, Some(seen(true, true, true, RUNNING)),      vec![stop(StopReason::StopInterrupted), kill()]),
            (Stopping, Some(seen(false, false, false, None)),      vec![stop(StopReason::ProcessGone)]),
            (Running,  None,                                       vec![stop(StopReason::NoProcess)]),
            (Starting, None,                                       vec![stop(StopReason::NoProcess)]),
            (Stopped,  None,                                       vec![]),
            (Failed,   None,                                       vec![]),
            (Stopped,  Some(seen(false, false, false, None)),      vec![]),
            (Stopped,  Some(seen(true, false, false, None)),       vec![]),
            (Stopped,  Some(seen(true, true, true, RUNNING)),      vec![kill()]),
            (Failed,   Some(seen(true, true, true, RUNNING)),      vec![kill()]),
        ];
        for (state, observation, expected) in table {
            assert_eq!(
                one(state, observation),
                expected,
                "recorded {state:?}, observed {observation:?}"
            );
        }
    }

    #[test]
    fn a_restore_interrupted_before_the_guest_took_its_identity_is_ended() {
        let restoring = |state: VmState| Record {
            identity_pending: true,
            ..record("a", state, Some(100))
        };
        let running = [Some(seen(true, true, true, RUNNING))];
        let paused = [Some(seen(true, true, true, PAUSED))];
        let none = HostScan::default();
        for observed in [&running, &paused] {
            assert_eq!(
                decide(&[restoring(VmState::Starting)], observed, &none),
                [stop(StopReason::RestoreInterrupted), kill()]
            );
        }
        // Only a start under way: a running VM took its identity before it was recorded so.
        assert_eq!(
            decide(&[restoring(VmState::Running)], &running, &none),
            [adopt(InstanceState::Running)]
        );
    }

    #[test]
    fn orphans_are_found_and_adopted_vms_keep_their_sockets() {
        let records = [
            record("a", VmState::Running, Some(100)),
            record("b", VmState::Running, Some(200)),
            record("c", VmState::Stopped, None),
        ];
        let observations = [
            Some(seen(true, true, true, RUNNING)),
            Some(seen(false, false, true, None)),
            None,
        ];
        let scan = HostScan {
            sockets: vec![
                sock("a.sock"),
                sock("a.vsock"),
                sock("a.vsock_1024"),
                sock("b.sock"),
                sock("b.vsock"),
                sock("x.sock"),
                sock("a.vsock_junk"),
            ],
            processes: vec![
                FoundProcess {
                    pid: 300,
                    api_socket: sock("x.sock"),
                },
                FoundProcess {
                    pid: 100,
                    api_socket: sock("a.sock"),
                },
            ],
        };
        assert_eq!(
            decide(&records, &observations, &scan),
            vec![
                Action::Adopt {
                    vm_id: "a".into(),
                    pid: 100,
                    state: InstanceState::Running
                },
                Action::MarkStopped {
                    vm_id: "b".into(),
                    reason: StopReason::ProcessGone
                },
                Action::Kill {
                    pid: 300,
                    api_socket: sock("x.sock"),
                    reason: KillReason::Orphan
                },
                Action::RemoveSocket {
                    path: sock("a.vsock_junk")
                },
                Action::RemoveSocket {
                    path: sock("b.sock")
                },
                Action::RemoveSocket {
                    path: sock("b.vsock")
                },
                Action::RemoveSocket {
                    path: sock("x.sock")
                },
            ]
        );
    }

    #[test]
    fn a_killed_vmm_is_not_killed_twice_as_an_orphan() {
        let records = [record("a", VmState::Running, Some(100))];
        let observations = [Some(seen(true, true, true, None))];
        let scan = HostScan {
            sockets: vec![sock("a.sock")],
            processes: vec![FoundProcess {
                pid: 100,
                api_socket: sock("a.sock"),
            }],
        };
        assert_eq!(
            decide(&records, &observations, &scan),
            vec![
                stop(StopReason::NotAnswering),
                kill(),
                Action::RemoveSocket {
                    path: sock("a.sock")
                },
            ]
        );
    }

    #[test]
    fn scans_of_both_backends_merge_into_one() {
        let found = |pid, name: &str| FoundProcess {
            pid,
            api_socket: sock(name),
        };
        let firecracker = HostScan {
            sockets: vec![sock("a.sock"), sock("b.sock")],
            processes: vec![found(200, "b.sock")],
        };
        let qemu = HostScan {
            sockets: vec![sock("b.sock"), sock("a.sock")],
            processes: vec![found(100, "a.sock")],
        };
        assert_eq!(
            firecracker.merge(qemu),
            HostScan {
                sockets: vec![sock("a.sock"), sock("b.sock")],
                processes: vec![found(100, "a.sock"), found(200, "b.sock")],
            }
        );
    }

    #[test]
    fn a_reused_pid_is_never_killed_even_if_listed() {
        // The scan lists Firecrackers only, so a reused pid can only show up there if it is a
        // Firecracker serving another socket, which no record owns: that one is an orphan.
        let records = [record("a", VmState::Running, Some(100))];
        let observations = [Some(seen(true, false, true, None))];
        let actions = decide(&records, &observations, &HostScan::default());
        assert_eq!(actions, vec![stop(StopReason::PidReused)]);
        assert!(!actions.iter().any(|a| matches!(a, Action::Kill { .. })));
    }
}
