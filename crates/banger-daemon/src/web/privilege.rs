//! Whether banger's privileged steps can run, as the console's banner and bootstrap form
//! show it. When bangerd is not root it runs `ip`, `nft` and `sysctl` (and a bootstrap's
//! root-owned steps) through `sudo -n`, which never prompts: without a sudoers rule those
//! steps fail at the first VM start. The console says so on every page, with the command
//! that fixes it, before the user finds out from a failed start.
//!
//! The answer is the doctor's own `sudo` and `sudo-bootstrap` checks (`banger_host::doctor`),
//! so the console, `banger doctor` and the start preflight never disagree. Those checks run a
//! few `sudo -n` processes; their result is kept for [`TTL`] so page loads stay cheap, and a
//! fixed sudoers file shows on the next load after that. Only pages renew it: the requests of
//! the pages' scripts (polls, every second or two) show no banner and use what is kept, so an
//! open console does not run `sudo` (and fill the auth log) around the clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use banger_host::doctor::{Check, CheckStatus, Doctor, Preflight};

use crate::Daemon;

/// How long one answer is kept.
pub const TTL: Duration = Duration::from_secs(15);

/// The doctor's `sudo` checks, as last run. `None` for a check that does not apply (bangerd is
/// root, or, for the bootstrap check, sudo is missing or fully passwordless and the `sudo`
/// check says so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileges {
    /// `sudo`: VM networking's privileged commands.
    pub sudo: Option<Check>,
    /// `sudo-bootstrap`: what `image bootstrap` runs as root.
    pub bootstrap: Option<Check>,
}

/// Something that is not ready, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub detail: String,
    pub fix: Option<String>,
}

impl Problem {
    fn of(check: &Check) -> Option<Problem> {
        (check.status != CheckStatus::Ok).then(|| Problem {
            detail: check.detail.clone(),
            fix: check.fix.clone(),
        })
    }
}

impl Privileges {
    /// Runs the doctor's checks for `d`'s host: its runner, its privilege mode, its state dir.
    /// Blocking: it runs `sudo -n` a few times.
    pub fn probe(d: &Daemon) -> Privileges {
        let doctor = Doctor::new(
            &*d.machines.runner,
            d.machines.net.clone(),
            d.paths.state_dir.clone(),
        );
        // The preflights that carry them (the other checks of these two only look at files).
        let named = |checks: Vec<Check>, name: &str| checks.into_iter().find(|c| c.name == name);
        Privileges {
            sudo: named(doctor.preflight(Preflight::Host), "sudo"),
            bootstrap: named(doctor.preflight(Preflight::Bootstrap), "sudo-bootstrap"),
        }
    }

    /// What every page's banner says: VM starts need it.
    pub fn banner(&self) -> Option<Problem> {
        self.sudo.as_ref().and_then(Problem::of)
    }

    /// What the bootstrap form says: only a bootstrap needs it.
    pub fn bootstrap_problem(&self) -> Option<Problem> {
        self.bootstrap.as_ref().and_then(Problem::of)
    }
}

type Probe = Arc<dyn Fn(&Daemon) -> Privileges + Send + Sync>;

/// An answer kept for a while.
#[derive(Debug)]
struct Kept {
    ttl: Duration,
    last: Mutex<Option<(Instant, Arc<Privileges>)>>,
}

impl Kept {
    fn fresh(&self) -> Option<Arc<Privileges>> {
        lock(&self.last)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, answer)| answer.clone())
    }

    /// The fresh answer, else `find`'s, kept from now on.
    fn get_or(&self, find: impl FnOnce() -> Privileges) -> Arc<Privileges> {
        if let Some(answer) = self.fresh() {
            return answer;
        }
        // Two pages loading at once may both probe; the later answer wins, both are right.
        let answer = Arc::new(find());
        *lock(&self.last) = Some((Instant::now(), answer.clone()));
        answer
    }

    /// The last answer however old, or none.
    fn last(&self) -> Option<Arc<Privileges>> {
        lock(&self.last).as_ref().map(|(_, answer)| answer.clone())
    }

    fn forget(&self) {
        *lock(&self.last) = None;
    }
}

/// The last answer and how to get a new one.
pub struct PrivilegeStatus {
    probe: Mutex<Probe>,
    kept: Kept,
}

impl std::fmt::Debug for PrivilegeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivilegeStatus")
            .field("kept", &self.kept)
            .finish_non_exhaustive()
    }
}

impl Default for PrivilegeStatus {
    fn default() -> Self {
        PrivilegeStatus {
            probe: Mutex::new(Arc::new(Privileges::probe)),
            kept: Kept {
                ttl: TTL,
                last: Mutex::new(None),
            },
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each holder replaces the value whole: a poisoned lock still holds a usable one.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PrivilegeStatus {
    /// Replaces how the answer is found (tests: a fixed doctor result) and forgets the last.
    pub fn set_probe(&self, probe: Probe) {
        *lock(&self.probe) = probe;
        self.kept.forget();
    }

    /// The last answer while it is fresh, else a new one (blocking: see [`Privileges::probe`]).
    pub fn get(&self, d: &Daemon) -> Arc<Privileges> {
        self.kept.get_or(|| {
            let probe = lock(&self.probe).clone();
            probe(d)
        })
    }

    /// The last answer however old, without probing (nothing known yet: nothing to say).
    pub fn last(&self) -> Arc<Privileges> {
        self.kept.last().unwrap_or_default()
    }

    /// [`Self::get`] from async code: a stale answer is renewed on the blocking pool.
    pub async fn current(d: &Arc<Daemon>) -> Arc<Privileges> {
        if let Some(answer) = d.web.privileges.kept.fresh() {
            return answer;
        }
        let d2 = d.clone();
        tokio::task::spawn_blocking(move || d2.web.privileges.get(&d2))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the sudo readiness check panicked");
                Arc::new(Privileges::default())
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn check(name: &str, status: CheckStatus) -> Check {
        Check {
            name: name.into(),
            status,
            detail: format!("{name} detail"),
            fix: (status != CheckStatus::Ok).then(|| format!("fix {name}")),
        }
    }

    #[test]
    fn only_failing_checks_make_problems() {
        let ok = Privileges {
            sudo: Some(check("sudo", CheckStatus::Ok)),
            bootstrap: Some(check("sudo-bootstrap", CheckStatus::Ok)),
        };
        assert_eq!(ok.banner(), None);
        assert_eq!(ok.bootstrap_problem(), None);
        assert_eq!(Privileges::default().banner(), None, "root: nothing to say");
        let bad = Privileges {
            sudo: Some(check("sudo", CheckStatus::Fail)),
            bootstrap: Some(check("sudo-bootstrap", CheckStatus::Warn)),
        };
        assert_eq!(
            bad.banner(),
            Some(Problem {
                detail: "sudo detail".into(),
                fix: Some("fix sudo".into())
            })
        );
        assert_eq!(
            bad.bootstrap_problem().unwrap().fix.as_deref(),
            Some("fix sudo-bootstrap")
        );
    }

    #[test]
    fn answers_are_kept_for_the_ttl_then_renewed() {
        let calls = AtomicUsize::new(0);
        let find = || {
            calls.fetch_add(1, Ordering::SeqCst);
            Privileges::default()
        };
        let kept = Kept {
            ttl: Duration::from_secs(3600),
            last: Mutex::new(None),
        };
        kept.get_or(find);
        kept.get_or(find);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "kept while fresh");
        kept.forget();
        kept.get_or(find);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "asked again once forgotten"
        );

        let stale = Kept {
            ttl: Duration::ZERO,
            last: Mutex::new(None),
        };
        stale.get_or(find);
        stale.get_or(find);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "renewed once stale");
    }
}
