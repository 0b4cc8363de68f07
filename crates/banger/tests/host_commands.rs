//! `banger doctor`, `banger web` and the web console line of `banger daemon status`, through
//! the real binaries and a real daemon.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;

fn banger(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_banger"));
    cmd.args(args)
        .env("HOME", root)
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("BANGER_DAEMON_BIN", env!("CARGO_BIN_EXE_bangerd"))
        .timeout(Duration::from_secs(60));
    cmd
}

struct Guard<'a>(&'a Path);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let _ = banger(self.0, &["daemon", "stop"]).ok();
    }
}

#[test]
fn doctor_prints_every_check_and_exits_10_only_when_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path());
    let out = banger(dir.path(), &["doctor", "-o", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["name"] == "kvm"), "{report}");
    let failed = checks.iter().filter(|c| c["status"] == "fail").count();
    let code = out.status.code().unwrap();
    if failed == 0 {
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        assert_eq!(code, 10);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{failed} host check(s) failed")),
            "{stderr}"
        );
    }
    let text = banger(dir.path(), &["doctor"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for check in checks {
        assert!(text.contains(check["name"].as_str().unwrap()), "{text}");
    }
}

#[test]
fn web_prints_a_one_time_login_url_that_signs_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let _guard = Guard(root);
    std::fs::create_dir_all(root.join("config/banger")).unwrap();
    std::fs::write(
        root.join("config/banger/config.toml"),
        "[web]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();

    let out = banger(root, &["web", "-o", "json"]).assert().success();
    let login: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let url = login["url"].as_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    assert!(path.starts_with("login?token="), "{url}");

    let status = banger(root, &["daemon", "status"]).assert().success();
    let status = String::from_utf8_lossy(&status.get_output().stdout).into_owned();
    assert!(
        status.contains(&format!(
            "web console: http://{host}/ (sign in with: banger web)"
        )),
        "{status}"
    );

    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let first = get(path);
    assert!(first.starts_with("HTTP/1.1 303"), "{first}");
    assert!(
        first.to_ascii_lowercase().contains("set-cookie:"),
        "{first}"
    );
    assert!(
        first.contains("HttpOnly") && first.contains("SameSite=Strict"),
        "{first}"
    );
    let second = get(path);
    assert!(
        !second.starts_with("HTTP/1.1 303"),
        "a login token worked twice: {second}"
    );

    let text = banger(root, &["web"]).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    assert!(text.contains("within 2 min"), "{text}");
}
