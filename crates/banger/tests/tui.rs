//! `banger tui` in a real terminal: tmux runs it against a real daemon in a sandbox of its own
//! (temporary home and XDG directories), and the test reads the screen with `capture-pane`
//! and types with `send-keys`, as a user would. tmux gets a private server socket so the test
//! never touches the user's sessions; a guard kills that server and stops the daemon.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the screen may take to show what the test waits for.
const WAIT: Duration = Duration::from_secs(10);

mod support;

use support::{Sandbox, create_stopped};

struct Tmux {
    socket: PathBuf,
    session: String,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        // -u: the screen has box drawing and the selection marker.
        cmd.arg("-u").arg("-S").arg(&self.socket);
        cmd
    }

    /// Starts `shell_command` in a detached session `width`×`height` cells large.
    fn start(socket: PathBuf, width: u16, height: u16, shell_command: &str) -> Tmux {
        let tmux = Tmux {
            socket,
            session: format!("banger-tui-{}", std::process::id()),
        };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg("-s")
            .arg(&tmux.session)
            .arg(shell_command)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn send(&self, key: &str) {
        let out = self
            .command()
            .args(["send-keys", "-t", &self.session, key])
            .output()
            .unwrap();
        assert!(out.status.success());
    }

    fn display(&self, format: &str) -> String {
        let out = self
            .command()
            .args(["display-message", "-p", "-t", &self.session, format])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until the screen satisfies `ready`; panics with the last screen otherwise.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited {WAIT:?} for {what}; the screen shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The line of `screen` that carries the selection marker.
fn selected(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.contains("▶ "))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// `banger tui` in the sandbox, in a 100×30 tmux pane. The shell reports how banger ended and
/// keeps the pane open to be read.
fn tui(sandbox: &Sandbox) -> Tmux {
    let mut command = String::from("env");
    for (key, value) in sandbox.env() {
        command.push_str(&format!(
            " {key}={}",
            shell_quote(&value.display().to_string())
        ));
    }
    command.push_str(&format!(
        " {} tui; echo \"tui exited with status $?\"; sleep 60",
        shell_quote(env!("CARGO_BIN_EXE_banger"))
    ));
    Tmux::start(sandbox.root().join("tmux.sock"), 100, 30, &command)
}

#[test]
fn vms_appear_the_selection_moves_and_q_quits() {
    if !tmux_installed() {
        banger_test_support::skip!("tmux not installed");
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.register("debian");
    for name in ["alpha", "bravo"] {
        sandbox.ok(&create_stopped(name, "debian", &[]));
    }

    let tmux = tui(&sandbox);

    let screen = tmux.wait_for("both VMs", |s| s.contains("alpha") && s.contains("bravo"));
    // What docs/tui.md shows; printed so a maintainer can refresh it (`--nocapture`).
    println!("{screen}");
    assert!(screen.contains("VMs (2)"), "{screen}");
    assert!(
        selected(&screen).is_some_and(|l| l.contains("alpha")),
        "{screen}"
    );
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "the TUI uses the alternate screen"
    );

    tmux.send("j");
    let screen = tmux.wait_for("the selection on bravo", |s| {
        selected(s).is_some_and(|l| l.contains("bravo"))
    });
    assert_eq!(
        screen.lines().filter(|l| l.contains("▶ ")).count(),
        1,
        "{screen}"
    );
    // The detail pane follows the selection.
    assert!(screen.contains("┌ bravo"), "{screen}");

    tmux.send("Up");
    tmux.wait_for("the selection back on alpha", |s| {
        selected(s).is_some_and(|l| l.contains("alpha"))
    });
    tmux.send("Down");
    tmux.wait_for("the selection on bravo again", |s| {
        selected(s).is_some_and(|l| l.contains("bravo"))
    });

    tmux.send("q");
    let screen = tmux.wait_for("banger to exit", |s| s.contains("tui exited with status"));
    assert!(screen.contains("tui exited with status 0"), "{screen}");
    // The terminal is back to normal: main screen, nothing of the TUI left on it.
    assert_eq!(tmux.display("#{alternate_on}"), "0");
    assert!(!screen.contains("alpha"), "{screen}");
}

/// The lifecycle keys against a real daemon on a machine where no VM can start: the configured
/// Firecracker does not exist, so a start fails the same way everywhere, whatever the host has.
/// `s` shows the start's failure with bangerd's reason, the VM stays stopped with that reason in
/// its details, and `x` on the stopped VM goes to bangerd without a question and shows its
/// refusal. Then what needs no booted guest of the console and ssh keys: `l` shows that the
/// console is empty and Esc closes it; `S` on the stopped VM says to start it; `P` sends the
/// promote prompt's name to bangerd and shows its refusal of a taken name in the prompt.
#[test]
fn a_start_that_fails_and_a_refused_stop_are_shown() {
    if !tmux_installed() {
        banger_test_support::skip!("tmux not installed");
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.config(
        "vmm = \"firecracker\"\nfirecracker_bin = \"/nonexistent/firecracker\"\n\
         [web]\nlisten = \"127.0.0.1:0\"\n",
    );
    sandbox.register("debian");
    sandbox.ok(&create_stopped("dev", "debian", &["--vcpus", "1"]));
    let tmux = tui(&sandbox);
    tmux.wait_for("the VM", |s| selected(s).is_some_and(|l| l.contains("dev")));

    tmux.send("s");
    let screen = tmux.wait_for("the start's failure", |s| {
        s.contains("✗ start vm dev failed: Firecracker cannot run VMs here")
    });
    assert!(
        selected(&screen).is_some_and(|l| l.contains("stopped")),
        "{screen}"
    );
    // The reason stays in the details once the list is read again.
    let screen = tmux.wait_for("the last error in the details", |s| {
        s.contains("last error: Firecracker cannot run VMs here")
            && s.contains("/nonexistent/firecracker")
    });
    // The second capture of docs/tui.md (`--nocapture` prints it).
    println!("{screen}");

    tmux.send("x");
    let screen = tmux.wait_for("the refusal", |s| {
        s.contains(r#"✗ Cannot stop VM dev: VM "dev" is stopped; only a running or paused VM"#)
    });
    assert!(!screen.contains("Stop VM dev?"), "no question: {screen}");

    // `l`: the console of a VM that never booted says so, and Esc brings the list back.
    tmux.send("l");
    let screen = tmux.wait_for("the console view", |s| {
        s.contains("dev · console") && s.contains("No console output from dev yet.")
    });
    assert!(screen.contains("stopped: its last boot"), "{screen}");
    tmux.send("Escape");
    let screen = tmux.wait_for("the list again", |s| {
        !s.contains("dev · console") && s.contains("┌ dev ")
    });
    assert!(
        selected(&screen).is_some_and(|l| l.contains("dev")),
        "{screen}"
    );

    // The ssh key on a VM that does not run: a notice with what to do, and no session.
    tmux.send("S");
    let screen = tmux.wait_for("the ssh refusal", |s| {
        s.contains("✗ Cannot ssh into VM dev: VM dev is stopped, not running")
    });
    assert!(screen.contains("hint: s starts it"), "{screen}");
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "the TUI kept the screen"
    );

    // `P`: the promote prompt takes a name and sends it to bangerd, whose refusal (the name is
    // the VM's own image's) shows in the prompt; nothing is promoted, and Esc closes it.
    tmux.send("P");
    tmux.wait_for("the promote prompt", |s| {
        s.contains("Promote VM to image") && s.contains("Image name")
    });
    tmux.send("debian");
    tmux.send("Enter");
    let screen = tmux.wait_for("bangerd's refusal in the prompt", |s| {
        s.contains(r#"✗ an image named "debian" already exists"#)
    });
    assert!(screen.contains("Promote VM to image"), "{screen}");
    tmux.send("Escape");
    tmux.wait_for("the list again", |s| {
        !s.contains("Promote VM to image") && s.contains("┌ dev ")
    });
    let images = sandbox.json(&["image", "list"]);
    assert_eq!(
        images.as_array().map(Vec::len),
        Some(1),
        "a refused promotion made an image: {images}"
    );

    // `n` and `C`: the snapshot and clone prompts send their names to bangerd, whose refusal
    // of a VM that does not run shows in the prompt; nothing is made. `3`: the snapshots
    // view says how to take one.
    tmux.send("n");
    tmux.wait_for("the snapshot prompt", |s| {
        s.contains("Snapshot VM dev") && s.contains("(empty: a dated name)")
    });
    tmux.send("Enter");
    tmux.wait_for("bangerd's refusal in the snapshot prompt", |s| {
        s.contains("Snapshot VM dev") && s.contains(r#"✗ VM "dev" is stopped; only a running"#)
    });
    tmux.send("Escape");
    // A key sent right after Escape would read as Alt and that key.
    tmux.wait_for("the list again", |s| !s.contains("Snapshot VM dev"));
    tmux.send("C");
    tmux.wait_for("the clone prompt", |s| s.contains("Clone VM dev"));
    tmux.send("dev2");
    tmux.send("Enter");
    tmux.wait_for("bangerd's refusal in the clone prompt", |s| {
        s.contains("Clone VM dev") && s.contains(r#"✗ VM "dev" is stopped; only a running"#)
    });
    tmux.send("Escape");
    tmux.wait_for("the list again", |s| !s.contains("Clone VM dev"));
    tmux.send("3");
    let screen = tmux.wait_for("the snapshots view", |s| {
        s.contains("Snapshots (0)") && s.contains("No snapshots yet")
    });
    assert!(screen.contains("banger vm snapshot NAME"), "{screen}");
    assert!(
        sandbox
            .json(&["snapshot", "list"])
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    assert_eq!(
        sandbox.json(&["vm", "list"]).as_array().map(Vec::len),
        Some(1),
        "a refused clone made a VM"
    );

    tmux.send("q");
    let screen = tmux.wait_for("banger to exit", |s| s.contains("tui exited with status"));
    assert!(screen.contains("tui exited with status 0"), "{screen}");
}
