//! `banger doctor`, `banger web` and the web console line of `banger daemon status`, through
//! the real binaries and a real daemon.

use std::io::{Read, Write};

mod support;

use support::Sandbox;

#[test]
fn doctor_prints_every_check_and_exits_10_only_when_one_fails() {
    let sandbox = Sandbox::new();
    let out = sandbox.banger(["doctor", "-o", "json"]).output().unwrap();
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
    let text = sandbox.banger(["doctor"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    for check in checks {
        assert!(text.contains(check["name"].as_str().unwrap()), "{text}");
    }
}

#[test]
fn web_prints_a_one_time_login_url_that_signs_in_once() {
    let sandbox = Sandbox::new();
    let login = sandbox.json(&["web"]);
    let url = login["url"].as_str().unwrap().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    assert!(path.starts_with("login?token="), "{url}");

    let status = sandbox.ok(&["daemon", "status"]);
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

    let text = sandbox.ok(&["web"]);
    assert!(text.contains("within 2 min"), "{text}");
}
