//! banger's lab from a test or a benchmark: `scripts/lab` run against a sandboxed banger whose
//! daemon lives in a network namespace ([`E2e`]), and banger driven inside the lab through
//! `banger vm exec lab -- ...`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::deadline;
use super::netns::E2e;

/// Opens the lab named `lab` with `scripts/lab`, this build's banger and bangerd and the
/// Firecracker binary `firecracker`: (stdout, stderr, success).
pub fn open(t: &E2e, firecracker: &Path) -> (String, String, bool) {
    open_with(t, firecracker, &[])
}

/// [`open`] with more of `scripts/lab`'s settings (`LAB_QEMU`, ...) in its environment.
pub fn open_with(t: &E2e, firecracker: &Path, env: &[(&str, &str)]) -> (String, String, bool) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lab");
    let mut cmd = Command::new(&script);
    cmd.envs(env.iter().copied())
        .arg("lab")
        .current_dir(t.sandbox.root())
        .envs(t.sandbox.env())
        .env("BANGER", env!("CARGO_BIN_EXE_banger"))
        .env("BANGERD", env!("CARGO_BIN_EXE_bangerd"))
        .env("FIRECRACKER", firecracker)
        .envs(jailer().map(|j| ("JAILER", j)))
        .env("BANGER_NETNS", &t.netns.0)
        .env("TMPDIR", t.sandbox.root());
    let out = deadline::run(cmd, None, "scripts/lab", deadline::default_limit());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// The Firecracker binary the host uses (`BANGER_FIRECRACKER`, else PATH's).
pub fn firecracker() -> Option<PathBuf> {
    program("BANGER_FIRECRACKER", "firecracker")
}

/// The jailer the host has (`BANGER_JAILER`, else PATH's); the lab runs its VMs behind it.
pub fn jailer() -> Option<PathBuf> {
    program("BANGER_JAILER", "jailer")
}

/// The program `var` names, else the first `name` on PATH.
fn program(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A lab benchmark's start: a sandboxed banger with the Debian image, and the lab opened with
/// `env` among `scripts/lab`'s settings; `None`, with a visible skip, on a host without what
/// the lab needs.
pub fn open_for_bench(env: &[(&str, &str)]) -> Option<E2e> {
    let Some(firecracker) = firecracker() else {
        banger_test_support::skip!("firecracker not found");
        return None;
    };
    let t = E2e::with_debian_image(&[
        ("qemu-system-x86_64", "--version"),
        ("debootstrap", "--version"),
    ])?;
    let (out, err, ok) = open_with(&t, &firecracker, env);
    assert!(ok, "scripts/lab failed\n{out}\n{err}");
    Some(t)
}

/// banger inside the lab, through `banger vm exec lab -- ...`.
pub struct Lab<'a> {
    pub t: &'a E2e,
}

impl Lab<'_> {
    /// `banger ARGS` inside the lab: (exit code, stdout, stderr).
    pub fn banger(&self, args: &[&str]) -> (i32, String, String) {
        let mut full = vec!["vm", "exec", "lab", "--", "banger"];
        full.extend_from_slice(args);
        self.t.banger(&full)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.banger(args);
        if code != 0 {
            panic!(
                "in the lab: banger {args:?} exited with {code}\n--- stdout\n{out}\n--- stderr\n{err}\n{}",
                self.diagnosis()
            );
        }
        out
    }

    /// What the host knows of the lab VM when a command in it failed: its state and the last
    /// lines of its console (a guest that stalled or ran out of memory says so there).
    pub fn diagnosis(&self) -> String {
        let (_, show, _) = self.t.banger(&["vm", "show", "lab"]);
        let (_, console, _) = self.t.banger(&["vm", "logs", "lab"]);
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        // Firecracker's own log and the guest console of the VM that changed last, when the
        // lab still answers.
        let (_, vmm_log, _) = self.sh("for f in vmm.log console.log; do \
               log=$(ls -t $(find /root/.local/state/banger -name $f 2>/dev/null) 2>/dev/null \
                 | head -n 1); [ -n \"$log\" ] && echo \"$log:\" && tail -n 80 \"$log\"; \
             done; free -m; cat /proc/loadavg");
        format!(
            "--- the lab VM, from the host\n{show}\n--- the lab's console, last lines\n{tail}\n\
             --- inside the lab: the newest Firecracker log and guest console, memory, load\n\
             {vmm_log}"
        )
    }

    /// Runs `phase` of a lab test after its mark; when it fails because the lab VM itself died
    /// or froze under it, deletes that lab, opens a fresh one and runs the phase again there,
    /// up to [`PHASE_RUNS`] runs in all.
    ///
    /// The lab's KVM is QEMU's software emulation of AMD SVM, and it has faults of its own: now
    /// and then the lab's kernel panics (an interrupt let in right after a guest exits, before
    /// KVM restored the host's state), or the whole lab VM stops running for a minute or more,
    /// after dozens of nested boots, or a guest inside dies at boot or while it runs. A whole
    /// lab test boots many dozens, so without this it would fail for the emulator about as
    /// often as not; a phase that boots a dozen guests can meet two faults in a row. Only the
    /// signs [`Lab::died_since`] names earn another run, and the evidence goes to the test's
    /// standard error, on the last run too; a wrong answer in a lab that ran on fails at once.
    pub fn run_phase(&self, firecracker: &Path, what: &str, phase: impl Fn(&Lab<'_>)) {
        self.phase(what);
        for run in 1..=PHASE_RUNS {
            let console_before = self.console().len();
            let _ = self.sh(&format!("touch {PHASE_MARK}"));
            let failure =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| phase(self))) {
                    Ok(()) => return,
                    Err(failure) => failure,
                };
            let Some(evidence) = self.died_since(console_before, panic_message(&*failure)) else {
                std::panic::resume_unwind(failure);
            };
            if run == PHASE_RUNS {
                deadline::note(&format!(
                    "  lab: the emulator failed the lab during \"{what}\" in each of its \
                     {PHASE_RUNS} runs; the last time: {evidence}"
                ));
                std::panic::resume_unwind(failure);
            }
            deadline::note(&format!(
                "  lab: the emulator failed the lab during \"{what}\": {evidence}\n  \
                 lab: opening a fresh lab to run \"{what}\" again"
            ));
            let (code, out, err) = self
                .t
                .banger_within(&["vm", "delete", "lab"], Duration::from_secs(300));
            assert_eq!(code, 0, "deleting the dead lab\n{out}\n{err}");
            let (out, err, ok) = open(self.t, firecracker);
            assert!(
                ok,
                "reopening the lab failed\n--- stdout\n{out}\n--- stderr\n{err}"
            );
            self.phase(&format!("{what} (run {}, in a fresh lab)", run + 1));
        }
    }

    /// Runs `step`; when it fails because a Firecracker guest inside the lab crashed while the
    /// lab itself ran on (what [`Lab::died_since`] calls the emulator's doing, and nothing
    /// else), `Err` with the evidence, so that the caller may clean up and go on in the same
    /// lab. Any other failure goes up as it was. The phase mark is touched first: only a crash
    /// under `step` counts.
    pub fn unless_a_guest_crashed(&self, step: impl FnOnce()) -> Result<(), String> {
        let console_before = self.console().len();
        let _ = self.sh(&format!("touch {PHASE_MARK}"));
        let failure = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(step)) {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        match self.died_since(console_before, panic_message(&*failure)) {
            Some(evidence) if evidence.starts_with(GUEST_CRASHED) => Err(evidence),
            _ => std::panic::resume_unwind(failure),
        }
    }

    /// The lab VM's console, line by line, as the host keeps it.
    fn console(&self) -> Vec<String> {
        let (_, console, _) = self.t.banger(&["vm", "logs", "lab"]);
        console.lines().map(str::to_owned).collect()
    }

    /// Why the lab VM died or froze after its console's first `since` lines, if it did: it is
    /// not running (its QEMU ended: a kernel panic ends it), its kernel reported a panic, a
    /// lockup, a stall or a clock it could not read for over 30 s (the whole VM stood still),
    /// it does not answer a trivial command within two minutes, a Firecracker inside logged,
    /// since the phase began, that KVM could not run its guest on or its guest's kernel
    /// crashed or stalled, or the phase's `failure` is a wait inside the lab running out.
    /// `None` for a lab that ran on.
    pub fn died_since(&self, since: usize, failure: &str) -> Option<String> {
        let (_, shown, _) = self.t.banger(&["vm", "show", "lab", "-o", "json"]);
        let vm: Value = serde_json::from_str(&shown).unwrap_or_default();
        // A wait inside the lab ran out (Firecracker's API, a guest agent, the lab's own agent
        // sending no heartbeat for a minute): in a lab that stands still for a minute at a
        // time that is the emulator's doing as often as not, and a wait that runs out every
        // time fails every run. A wrong answer is never this.
        if let Some(line) = failure.lines().find(|l| {
            l.starts_with("error: ")
                && (l.contains("no answer within")
                    || (l.contains("did not") && l.contains(" within ")))
        }) {
            return Some(format!("a wait inside it ran out ({})", line.trim()));
        }
        let console = self.console();
        let fault = console.iter().skip(since).find(|line| {
            [
                "Kernel panic",
                "BUG: soft lockup",
                "self-detected stall",
                "blocked for more than",
            ]
            .iter()
            .any(|sign| line.contains(sign))
                || frozen_for_secs(line) > 30
        });
        if vm["state"] != "running" {
            return Some(format!(
                "it is {}: {}",
                vm["state"].as_str().unwrap_or("gone"),
                fault.map_or(
                    vm["failure"].as_str().unwrap_or("no failure recorded"),
                    String::as_str
                )
            ));
        }
        if let Some(line) = fault {
            return Some(format!("its console says {}", line.trim()));
        }
        match self.t.banger_cleanup(
            &["vm", "exec", "lab", "--", "true"],
            Duration::from_secs(120),
        ) {
            Some((0, _, _)) => {}
            Some((_, _, err)) => return Some(format!("it does not answer: {}", err.trim())),
            None => return Some("a trivial command in it did not end within two minutes".into()),
        }
        // The lab ran on, but the emulated SVM can fail a nested guest too: its vCPU stops
        // with a triple fault (KVM's shutdown exit) or KVM cannot run it, or its kernel
        // crashes or stalls, at a boot that the same VM passed a moment before.
        let (_, crashed, _) = self.sh(&format!(
            "find /root/.local/state/banger -name 'vmm.log*' -newer {PHASE_MARK} 2>/dev/null \
             | xargs -r grep -h -m 1 -E '{NESTED_FAULTS}' | head -n 1; \
             find /root/.local/state/banger -name 'console.log*' -newer {PHASE_MARK} 2>/dev/null \
             | xargs -r grep -h -m 1 -E '{GUEST_CRASHES}' | head -n 1"
        ));
        let crashed = crashed.lines().next().unwrap_or_default().trim();
        (!crashed.is_empty()).then(|| format!("{GUEST_CRASHED}: {crashed}"))
    }

    /// The lab's memory and load, printed beside a phase mark.
    pub fn phase(&self, what: &str) {
        phase(what);
        let (_, out, _) = self.sh("free -m | sed -n 2p; cat /proc/loadavg");
        println!(
            "  lab: at \"{what}\": {}",
            out.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    pub fn vm(&self, name: &str) -> Value {
        self.json(&["vm", "show", name])
    }

    /// A shell command inside the lab: (exit code, stdout, stderr).
    pub fn sh(&self, script: &str) -> (i32, String, String) {
        self.t
            .banger(&["vm", "exec", "lab", "--", "sh", "-c", script])
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let (code, out, err) = self.sh(script);
        if code != 0 {
            panic!(
                "in the lab: {script} exited with {code}\n--- stdout\n{out}\n--- stderr\n{err}\n{}",
                self.diagnosis()
            );
        }
        out
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, check: impl FnMut() -> bool) {
        banger_test_support::wait_for(what, timeout, Duration::from_millis(500), check);
    }

    pub fn stages(vm: &Value) -> Vec<String> {
        vm["runtime"]["boot"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|s| s["stage"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        // The inner daemon's VMs and daemon go before the lab VM itself (E2e's drop).
        // A lab that stopped answering gets three minutes; the lab VM goes with E2e either way.
        let _ = self.t.banger_cleanup(
            &["vm", "exec", "lab", "--", "sh", "-c",
            "for vm in $(banger vm list -o json | sed -n 's/.*\"name\": \"\\([^\"]*\\)\".*/\\1/p'); do \
               banger vm delete \"$vm\"; done; banger daemon stop"],
            Duration::from_secs(180),
        );
    }
}

/// How many times [`Lab::run_phase`] runs a phase that the emulator keeps failing.
const PHASE_RUNS: u32 = 4;

/// What a panic said, when it said it in words.
fn panic_message(failure: &(dyn std::any::Any + Send)) -> &str {
    failure
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| failure.downcast_ref::<&str>().copied())
        .unwrap_or_default()
}

/// How [`Lab::died_since`] begins the evidence of a nested guest's crash in a lab that ran on.
const GUEST_CRASHED: &str = "a Firecracker guest inside it crashed";

/// The file inside the lab whose time marks the start of a phase (see [`Lab::run_phase`]) or of
/// a step in it (see [`Lab::unless_a_guest_crashed`]).
const PHASE_MARK: &str = "/tmp/banger-lab-phase";

/// What Firecracker logs when KVM could not run a nested guest's vCPU on: a triple fault
/// (`Shutdown`), an internal error, a failed entry or emulation, a failed `KVM_RUN`.
const NESTED_FAULTS: &str = concat!(
    "Unexpected exit reason on vcpu run: Shutdown|KVM_EXIT_INTERNAL_ERROR|KVM_EXIT_FAIL_ENTRY",
    "|KVM failed to emulate|Failure during vcpu run"
);

/// What a nested guest's kernel prints on its console when it crashes or stalls.
const GUEST_CRASHES: &str = concat!(
    "Kernel panic|BUG: |Oops:|general protection fault|double fault",
    "|self-detected stall|blocked for more than"
);

/// How long the kernel's clock watchdog found the whole VM standing still, from a console line
/// such as `clocksource: Long readout interval, skipping watchdog check: cs_nsec: 73491776390
/// wd_nsec: 73496593250`; 0 for any other line.
fn frozen_for_secs(line: &str) -> u64 {
    if !line.contains("Long readout interval") {
        return 0;
    }
    line.split_once("cs_nsec:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |ns| ns / 1_000_000_000)
}

/// Marks the start of a phase on the test's real standard error, with the time since the
/// first phase: a run killed from outside still shows how far the lab got.
pub fn phase(what: &str) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    deadline::note(&format!(
        "  lab: {what} (at {:.0}s)",
        start.elapsed().as_secs_f64()
    ));
}

/// The middle value of `xs` (the upper one of an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Milliseconds `script` took inside the lab, timed there (`date +%s%N` around it, so the
/// lab's own `vm exec` round trip is not counted); panics when it fails.
pub fn timed(lab: &Lab<'_>, script: &str) -> f64 {
    let out = lab.sh_ok(&format!(
        "s=$(date +%s%N); ( {script} ) >/tmp/bench.out 2>&1 || {{ cat /tmp/bench.out >&2; exit 1; }}; \
         e=$(date +%s%N); echo $(( (e - s) / 1000 ))"
    ));
    out.trim().parse::<f64>().unwrap() / 1000.0
}

/// A VM's start stages in milliseconds, from `vm show`.
pub fn stage_ms(vm: &Value) -> Vec<(String, f64)> {
    vm["runtime"]["boot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_str().unwrap().to_owned(),
                s["ms"].as_f64().unwrap_or_default(),
            )
        })
        .collect()
}
