//! The files banger adds to a bootstrapped root: services read back from `inittab`, the
//! scripts run under a real `sh` where there is one, staged modes and symlinks, and the
//! agent's install hook against a recording runner.

use super::*;
use banger_host::{FakeRunner, Matcher, RealRunner};

/// Whether `sh` is on the `PATH`.
fn which_sh() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("sh"))
            .find(|p| p.is_file())
    })
}
use std::os::unix::fs::PermissionsExt;

#[test]
fn services_are_the_respawned_agent_and_sshd_in_that_order() {
    let names = |inittab: &str| -> Vec<(String, u16)> {
        services_in_inittab(inittab)
            .into_iter()
            .map(|s| (s.name, s.port))
            .collect()
    };
    assert_eq!(
        names("::respawn:/usr/sbin/sshd -D -e\n::respawn:/usr/local/sbin/banger-agent\n"),
        [("agent".to_owned(), 1024), ("ssh".to_owned(), 22)]
    );
    // The image banger bootstraps declares what its own inittab runs.
    let ours = files()
        .into_iter()
        .find_map(|f| match f {
            GuestFile::File {
                path: "etc/inittab",
                contents,
                ..
            } => Some(contents),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        names(&(ours + &agent_inittab_line())),
        [("agent".to_owned(), 1024), ("ssh".to_owned(), 22)]
    );
    // Commented out, run once, or another program with a similar name: not services.
    assert_eq!(
        names(
            "#::respawn:/usr/sbin/sshd -D\n::once:/usr/local/sbin/banger-agent\n\
                 ::respawn:/usr/bin/sshd-helper\n"
        ),
        []
    );
}

fn checks(inittab: &str) -> Vec<(String, u16, Option<u64>)> {
    services_in_inittab(inittab)
        .into_iter()
        .map(|s| (s.name, s.port, s.timeout_secs))
        .collect()
}

#[test]
fn declared_services_follow_the_agent_and_sshd_in_inittab_order() {
    let inittab = "::sysinit:/etc/banger/rc.boot\n\
                       ::respawn:/usr/local/sbin/banger-service web 8080 120\n\
                       ::respawn:/usr/sbin/sshd -D -e\n\
                       ::respawn:/usr/local/sbin/banger-service opencode 4096\n\
                       ::respawn:/usr/local/sbin/banger-agent --listen-vm-ip\n";
    assert_eq!(
        checks(inittab),
        [
            ("agent".to_owned(), 1024, None),
            ("ssh".to_owned(), 22, None),
            ("web".to_owned(), 8080, Some(120)),
            ("opencode".to_owned(), 4096, None),
        ]
    );
}

#[test]
fn commented_once_and_malformed_service_entries_are_ignored() {
    let inittab = "#::respawn:/usr/local/sbin/banger-service off 8080\n\
                       ::once:/usr/local/sbin/banger-service once 8081\n\
                       ::respawn:/usr/local/sbin/banger-service\n\
                       ::respawn:/usr/local/sbin/banger-service noport\n\
                       ::respawn:/usr/local/sbin/banger-service Upper 8082\n\
                       ::respawn:/usr/local/sbin/banger-service ssh 2222\n\
                       ::respawn:/usr/local/sbin/banger-service shell 22\n\
                       ::respawn:/usr/local/sbin/banger-service big 70000\n\
                       ::respawn:/usr/local/sbin/banger-service zero 8083 0\n\
                       ::respawn:/usr/local/sbin/banger-service long 8083 86401\n\
                       ::respawn:/usr/local/sbin/banger-service words 8084 10 more\n\
                       ::respawn:/usr/local/sbin/banger-service late 8085 soon\n\
                       ::respawn:/usr/local/sbin/banger-service nopath 8089 http=health\n\
                       ::respawn:/usr/local/sbin/banger-service twice 8090 http=/ 10\n\
                       ::respawn:/usr/local/sbin/banger-service-old web 8086\n\
                       ::respawn:/usr/local/sbin/banger-service ok 8087\n\
                       ::respawn:/usr/local/sbin/banger-service ok 8088\n";
    assert_eq!(checks(inittab), [("ok".to_owned(), 8087, None)]);
}

#[test]
fn an_inittab_line_reads_back_as_the_same_service() {
    for check in [
        ServiceCheck {
            name: "opencode".into(),
            port: 4096,
            timeout_secs: None,
            http: None,
        },
        ServiceCheck {
            name: "web-2".into(),
            port: 65535,
            timeout_secs: Some(300),
            http: None,
        },
        ServiceCheck {
            name: "api".into(),
            port: 8080,
            timeout_secs: Some(300),
            http: Some("/health?full=1".into()),
        },
        ServiceCheck {
            name: "ui".into(),
            port: 3000,
            timeout_secs: None,
            http: Some("/".into()),
        },
    ] {
        let line = service_inittab_line(&check);
        assert!(line.ends_with('\n'), "{line:?}");
        assert_eq!(services_in_inittab(&line), [check]);
    }
    assert_eq!(
        service_inittab_line(&ServiceCheck {
            name: "web".into(),
            port: 8080,
            timeout_secs: Some(90),
            http: None,
        }),
        "::respawn:/usr/local/sbin/banger-service web 8080 90\n"
    );
}

#[test]
fn service_names_and_ports_are_checked() {
    for (name, port) in [("opencode", 4096), ("a", 1), ("web-2", 65535), ("x1", 8080)] {
        assert_eq!(validate_service(name, port), Ok(()), "{name} {port}");
    }
    let long = "a".repeat(64);
    for (name, port, says) in [
        ("", 80, "empty"),
        (long.as_str(), 80, "64 characters"),
        ("Web", 80, "contains 'W'"),
        ("my_app", 80, "contains '_'"),
        ("web.app", 80, "contains '.'"),
        ("-web", 80, "start with a letter"),
        ("1web", 80, "start with a letter"),
        ("web-", 80, "ends with '-'"),
        ("agent", 8080, "banger's own"),
        ("ssh", 2222, "banger's own"),
        ("web", 0, "port 0"),
        ("web", 22, "sshd"),
        ("web", 1024, "the guest agent"),
    ] {
        let err = validate_service(name, port).unwrap_err();
        assert!(err.contains(says), "{name:?} {port}: {err}");
    }
    // The message says what is allowed, not only what is wrong.
    assert!(
        validate_service("Web", 80)
            .unwrap_err()
            .contains("lowercase letters, digits and '-'")
    );
    assert!(
        validate_service("web", 22)
            .unwrap_err()
            .contains("from 1 to 65535 other than 22 and 1024")
    );
}

#[test]
fn a_manifest_s_services_are_checked_as_a_whole() {
    let check = |name: &str, port: u16, timeout_secs: Option<u64>| ServiceCheck {
        name: name.into(),
        port,
        timeout_secs,
        http: None,
    };
    assert_eq!(
        validate_services(&[
            check("agent", 1024, None),
            check("ssh", 22, None),
            check("web", 8080, Some(60)),
        ]),
        Ok(())
    );
    for (services, says) in [
        (vec![check("ssh", 2222, None)], "banger's ssh listens on 22"),
        (
            vec![check("agent", 80, None)],
            "banger's agent listens on 1024",
        ),
        (vec![check("Web", 80, None)], "contains 'W'"),
        (
            vec![check("web", 80, Some(0))],
            "deadline of 0 seconds; give 1 to 86400",
        ),
        (
            vec![check("web", 80, Some(86_401))],
            "deadline of 86401 seconds",
        ),
        (
            vec![check("web", 80, None), check("web", 81, None)],
            "declared twice",
        ),
    ] {
        let err = validate_services(&services).unwrap_err();
        assert!(err.contains(says), "{services:?}: {err}");
    }
}

#[test]
fn service_scripts_exec_a_simple_command_and_run_a_compound_one() {
    let simple = service_script("web", "busybox httpd -f -p 8080");
    assert!(simple.starts_with("#!/bin/sh\n"), "{simple}");
    assert!(
        simple.ends_with("\nexec busybox httpd -f -p 8080\n"),
        "{simple}"
    );
    assert!(simple.contains("/var/log/banger/web.log"), "{simple}");
    assert!(
        service_script("web", "PORT=8080 NODE_ENV=production node server.js")
            .ends_with("\nPORT=8080 NODE_ENV=production exec node server.js\n")
    );
    // A quoted assignment is left to the shell as written.
    assert!(
        service_script("web", "GREETING='a b' node server.js")
            .ends_with(".\nGREETING='a b' node server.js\n")
    );
    let compound = service_script("app", "cd /app && npm start");
    assert!(compound.ends_with("\ncd /app && npm start\n"), "{compound}");
    assert!(!compound.contains("exec cd"), "{compound}");
    assert_eq!(service_log("web"), "var/log/banger/web.log");
}

#[test]
fn the_service_runner_logs_rotates_and_execs_the_script() {
    let GuestFile::File {
        path,
        mode,
        contents,
    } = service_runner()
    else {
        panic!("the runner is a file");
    };
    assert_eq!((path, mode), (SERVICE_RUNNER, 0o755));
    assert!(contents.starts_with("#!/bin/sh\n"));
    for needle in [
        "HOME=/root\n",
        "\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        "mkdir -p /var/log/banger\n",
        "log=\"/var/log/banger/$name.log\"",
        "-gt 1048576 ]",
        "mv -f \"$log\" \"$log.1\"",
        "exec >>\"$log\" 2>&1 </dev/null\n",
        "cd /root",
        "script=\"/etc/banger/services/$name\"",
    ] {
        assert!(contents.contains(needle), "{needle:?} not in\n{contents}");
    }
    assert!(contents.ends_with("exec \"$script\"\n"), "{contents}");
}

/// The runner and a script, run for real by `sh` in a directory standing for the root:
/// the output lands in the log, an oversized log is moved aside, a bad name is refused.
#[test]
fn the_service_runner_runs_under_sh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let GuestFile::File { contents, .. } = service_runner() else {
        unreachable!()
    };
    // The runner's absolute paths, moved under the temporary root.
    let at = root.display().to_string();
    let runner = contents
        .replace("/etc/banger/services", &format!("{at}/etc/banger/services"))
        .replace("/var/log/banger", &format!("{at}/var/log/banger"));
    let runner_path = root.join("banger-service");
    std::fs::write(&runner_path, runner).unwrap();
    std::fs::create_dir_all(root.join(SERVICES_DIR)).unwrap();
    let script = root.join(SERVICES_DIR).join("echo");
    std::fs::write(
        &script,
        service_script("echo", "echo hello from $HOME; exit 3"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = root.join(service_log("echo"));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::write(&log, vec![b'x'; SERVICE_LOG_MAX_BYTES as usize + 1]).unwrap();

    // (exit code, stderr) of the runner run with `sh`, through banger-host's runner.
    let run = |name: &str| -> (Option<i32>, String) {
        let cmd = CommandSpec::new("sh")
            .arg(runner_path.display().to_string())
            .args([name, "8080"]);
        match RealRunner.run(&cmd) {
            Ok(_) => (Some(0), String::new()),
            Err(RunError::Failed { code, stderr, .. }) => (code, stderr),
            Err(e) => panic!("{e}"),
        }
    };
    if which_sh().is_none() {
        banger_test_support::skip!("sh not found");
        return;
    }
    let out = run("echo");
    assert_eq!(out.0, Some(3), "{out:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("banger-service: starting echo ("),
        "{text}"
    );
    assert!(text.ends_with("hello from /root\n"), "{text}");
    assert_eq!(
        std::fs::metadata(root.join("var/log/banger/echo.log.1"))
            .unwrap()
            .len(),
        SERVICE_LOG_MAX_BYTES + 1
    );
    // Appended, not replaced, on the next start.
    run("echo");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("hello from /root").count(), 2, "{text}");
    // A service without a script says so in its log.
    let out = run("missing");
    assert_eq!(out.0, Some(1));
    let missing = std::fs::read_to_string(root.join(service_log("missing"))).unwrap();
    assert!(
        missing.contains("is missing or not executable"),
        "{missing}"
    );
    let out = run("../etc");
    assert_eq!(out.0, Some(2));
    assert!(out.1.contains("invalid service name"), "{out:?}");
}

#[test]
fn the_init_runs_rc_boot_then_supervises_sshd() {
    let files = files();
    let inittab = files
        .iter()
        .find_map(|f| match f {
            GuestFile::File { path, contents, .. } if *path == "etc/inittab" => {
                Some(contents.clone())
            }
            _ => None,
        })
        .unwrap();
    let lines: Vec<&str> = inittab.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "::sysinit:/etc/banger/rc.boot",
            "::respawn:/usr/sbin/sshd -D -e",
            "::ctrlaltdel:/bin/busybox reboot",
            "::shutdown:/bin/busybox sync",
        ]
    );
    assert!(files.contains(&GuestFile::Symlink {
        path: "sbin/init",
        target: "/bin/busybox"
    }));
    // Stopping the machine from inside ends the VM on Firecracker too: a reboot.
    for path in ["sbin/poweroff", "sbin/halt"] {
        assert!(files.contains(&GuestFile::File {
            path,
            mode: 0o755,
            contents: END_VM_SCRIPT.into()
        }));
    }
    assert!(END_VM_SCRIPT.ends_with("exec /bin/busybox reboot \"$@\"\n"));
}

#[test]
fn staged_files_keep_their_modes_and_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), false).unwrap();
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode(RC_BOOT), 0o755);
    assert_eq!(mode("etc/inittab"), 0o644);
    assert_eq!(mode("etc/banger"), 0o755);
    assert_eq!(
        std::fs::read_link(dir.path().join("sbin/init")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/machine-id")).unwrap(),
        ""
    );

    // Merged /usr: the init goes where /sbin points.
    let merged = tempfile::tempdir().unwrap();
    stage(merged.path(), true).unwrap();
    assert!(!merged.path().join("sbin").exists());
    assert_eq!(
        std::fs::read_link(merged.path().join("usr/sbin/init")).unwrap(),
        Path::new("/bin/busybox")
    );
}

#[test]
fn rc_boot_is_valid_shell() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), true).unwrap();
    let script = dir.path().join(RC_BOOT).display().to_string();
    match RealRunner.run(&CommandSpec::new("sh").args(["-n", &script])) {
        Ok(_) => {}
        Err(RunError::NotFound { .. }) => banger_test_support::skip!("sh not found"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn no_agent_means_no_command() {
    let fake = FakeRunner::new();
    let root = tempfile::tempdir().unwrap();
    assert!(!install_agent(&fake, Privilege::Root, root.path(), None).unwrap());
    assert!(fake.calls().is_empty());
}

#[test]
fn the_agent_is_installed_and_started_by_init() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("banger-agent");
    std::fs::write(&agent, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/inittab"), "::sysinit:/etc/banger/rc.boot\n").unwrap();

    // For real, as the user running the test: install(1) and tee(1) need no privilege
    // on a directory the user owns.
    let installed = install_agent(&RealRunner, Privilege::Root, &root, Some(&agent));
    match installed {
        Ok(true) => {}
        Err(AgentError::Install(RunError::NotFound { program })) => {
            banger_test_support::skip!("{program} not found");
            return;
        }
        other => panic!("{other:?}"),
    }
    let copied = root.join(AGENT_PATH);
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&agent).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&copied).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/inittab")).unwrap(),
        "::sysinit:/etc/banger/rc.boot\n::respawn:/usr/local/sbin/banger-agent --listen-vm-ip\n"
    );

    // Through sudo when the daemon is not root.
    let fake = FakeRunner::new();
    install_agent(&fake, Privilege::Sudo, &root, Some(&agent)).unwrap();
    assert_eq!(
        fake.calls(),
        [
            format!(
                "sudo -n install -D -m 0755 {} {}",
                agent.display(),
                copied.display()
            ),
            format!("sudo -n tee -a {}/etc/inittab", root.display()),
        ]
    );
    let specs = fake.specs();
    assert_eq!(
        specs[1].stdin.as_deref(),
        Some(agent_inittab_line().as_bytes())
    );
}

#[test]
fn a_non_executable_agent_is_refused_before_any_command() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("agent");
    std::fs::write(&agent, "data").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o644)).unwrap();
    let fake = FakeRunner::new();
    let err = install_agent(&fake, Privilege::Root, tmp.path(), Some(&agent)).unwrap_err();
    assert!(matches!(err, AgentError::NotExecutable { .. }), "{err}");
    assert!(fake.calls().is_empty());
    // A failing copy is reported and nothing is appended to inittab.
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = FakeRunner::new().fail_nth(Matcher::program("install"), 1, "no space");
    let err = install_agent(&fake, Privilege::Root, tmp.path(), Some(&agent)).unwrap_err();
    assert!(matches!(err, AgentError::Install(_)), "{err}");
    assert_eq!(fake.calls().len(), 1);
}
