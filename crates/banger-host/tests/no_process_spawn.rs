//! Guards the rule that only `banger-host` creates processes: every other crate's source must
//! go through its `CommandRunner` or `process` module. Test harnesses (`tests/`, `benches/`)
//! are exempt because they launch banger's own binaries, and so are crates' build scripts
//! (`crates/<crate>/build.rs`), which run at compile time, never in banger. The guest agent's
//! guest side (`banger-agent/src/guest/`) is exempt too: running commands inside the VM is its
//! job. The rest of `banger-agent`, and `banger-agent-protocol` with the host's client of the
//! agent, are checked like any other crate.

use std::path::{Path, PathBuf};

/// The patterns are assembled so this file does not contain them literally.
fn forbidden() -> [String; 3] {
    [
        ["std", "process", "Command"].join("::"),
        ["tokio", "process", "Command"].join("::"),
        format!("{}::new(", "Command"),
    ]
}

/// Module paths from which a `use` may import the command type, e.g. a grouped
/// `use std::process::{Command, Stdio};` that the plain patterns miss.
fn process_modules() -> [String; 2] {
    [
        ["std", "process", ""].join("::"),
        ["tokio", "process", ""].join("::"),
    ]
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && !path.is_symlink() {
            if !matches!(&*name, "tests" | "benches" | "target") && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// `word` occurs in `text` delimited by non-identifier characters.
fn has_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

fn violations(path: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let line_of = |offset: usize| text[..offset].matches('\n').count() + 1;
    let is_comment = |offset: usize| {
        let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        text[start..].trim_start().starts_with("//")
    };
    for pattern in forbidden() {
        for (offset, _) in text.match_indices(&pattern) {
            if !is_comment(offset) {
                found.push((line_of(offset), pattern.clone()));
            }
        }
    }
    for module in process_modules() {
        for (offset, _) in text.match_indices(&module) {
            let statement = text[offset..].split(';').next().unwrap_or("");
            if !is_comment(offset) && has_word(statement, "Command") {
                found.push((line_of(offset), format!("{module}{{.. Command ..}}")));
            }
        }
    }
    found.sort();
    found.dedup_by_key(|(line, _)| *line);
    found
        .into_iter()
        .map(|(line, what)| format!("{}:{line}: {what}", path.display()))
        .collect()
}

/// Source trees allowed to create processes.
fn exempt(crates: &Path) -> [PathBuf; 2] {
    [
        crates.join("banger-host"),
        crates.join("banger-agent").join("src").join("guest"),
    ]
}

#[test]
fn only_banger_host_creates_processes() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crates = crates.canonicalize().unwrap();
    let exempt = exempt(&crates);
    let mut files = Vec::new();
    rust_files(&crates, &mut files);
    assert!(
        !files.is_empty(),
        "no sources found under {}",
        crates.display()
    );

    let mut all = Vec::new();
    let build_script = |f: &Path| {
        f.file_name().is_some_and(|n| n == "build.rs")
            && f.parent().is_some_and(|d| d.join("Cargo.toml").is_file())
    };
    for file in files
        .iter()
        .filter(|f| !exempt.iter().any(|dir| f.starts_with(dir)) && !build_script(f))
    {
        let text = std::fs::read_to_string(file).unwrap();
        all.extend(violations(file, &text));
    }
    assert!(
        all.is_empty(),
        "only banger-host may create processes; use banger_host::runner or \
         banger_host::process instead:\n{}",
        all.join("\n")
    );
}

#[test]
fn the_check_catches_every_spelling() {
    let cmd = "Command";
    let cases = [
        format!("let c = std::process::{cmd}::new(\"ls\");"),
        format!("use tokio::process::{cmd};"),
        format!("use std::process::{{\n    ExitStatus,\n    {cmd},\n}};"),
        format!("let c = {cmd}::new(\"ls\");"),
    ];
    for case in &cases {
        assert_eq!(
            violations(Path::new("x.rs"), case).len(),
            1,
            "missed: {case}"
        );
    }
    let fine = [
        format!("use std::os::unix::process::{cmd}Ext;"),
        format!("use std::process::{{ExitStatus, Stdio}}; struct {cmd}Spec;"),
        format!("// std::process::{cmd} is only allowed in banger-host"),
    ];
    for case in &fine {
        assert!(
            violations(Path::new("x.rs"), case).is_empty(),
            "false alarm: {case}"
        );
    }
}

#[test]
fn the_agent_exemption_covers_its_guest_side_only() {
    let crates = Path::new("/src/crates");
    let exempt = exempt(crates);
    let is_exempt = |rel: &str| exempt.iter().any(|dir| crates.join(rel).starts_with(dir));
    assert!(is_exempt("banger-agent/src/guest/exec.rs"));
    assert!(!is_exempt("banger-agent/src/client.rs"));
    assert!(!is_exempt("banger-agent/src/main.rs"));
    assert!(!is_exempt("banger-agent/src/guest.rs"));
    assert!(!is_exempt("banger-daemon/src/vm.rs"));
}

#[test]
fn this_file_does_not_trip_the_check() {
    let text = include_str!("no_process_spawn.rs");
    assert!(violations(Path::new(file!()), text).is_empty());
}
