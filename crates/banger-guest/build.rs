//! Builds banger's guest binaries as static executables and hands them to `lib.rs` to embed.
//!
//! A guest binary must run in any guest, so it is linked statically (`+crt-static`) for
//! `x86_64-unknown-linux-gnu`, stripped, in release mode. That needs RUSTFLAGS the outer build
//! must not get, so this script runs a nested `cargo build` of the workspace's guest package
//! with its own target directory, `<outer target>/guest` (stable across builds, so the nested
//! build is incremental). The nested cargo gets a clean environment: every variable the outer
//! cargo sets for build scripts is removed (a `RUSTC_WORKSPACE_WRAPPER` from clippy, `RUSTFLAGS`,
//! `TARGET`, `OUT_DIR`, ...), except the jobserver (`CARGO_MAKEFLAGS`), so the nested build
//! shares the outer build's job slots instead of adding its own.
//!
//! Set `BANGER_GUEST_<NAME>` (e.g. `BANGER_GUEST_INIT=/path/to/banger-init`) to embed a
//! prebuilt static binary instead (packagers, offline builds).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest binaries: (constant name in lib.rs, cargo package, binary name). Adding one is
/// one line here.
const GUEST_BINARIES: &[(&str, &str, &str)] = &[
    ("INIT", "banger-init", "banger-init"),
    ("AGENT", "banger-agent", "banger-agent"),
];

/// The workspace's library crates the guest binaries are built from, besides the packages
/// above: a change to one of them changes a guest binary too.
const GUEST_LIBRARIES: &[&str] = &["banger-agent-protocol", "banger-guest-contract"];

const TRIPLE: &str = "x86_64-unknown-linux-gnu";
const RUSTFLAGS: &str = "-C target-feature=+crt-static -C strip=symbols";

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let workspace = manifest_dir.join("../..");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );

    for library in GUEST_LIBRARIES {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("crates").join(library).display()
        );
    }

    let mut generated = String::new();
    let mut to_build = Vec::new();
    for (constant, package, binary) in GUEST_BINARIES {
        let override_var = format!("BANGER_GUEST_{constant}");
        println!("cargo:rerun-if-env-changed={override_var}");
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("crates").join(package).display()
        );
        match std::env::var_os(&override_var) {
            Some(path) => embed(&mut generated, constant, binary, Path::new(&path), &out_dir),
            None => to_build.push((*constant, *package, *binary)),
        }
    }
    if !to_build.is_empty() {
        let target_dir = guest_target_dir(&out_dir);
        build(&workspace, &target_dir, &to_build);
        for (constant, _, binary) in &to_build {
            let built = target_dir.join(TRIPLE).join("release").join(binary);
            embed(&mut generated, constant, binary, &built, &out_dir);
        }
    }
    std::fs::write(out_dir.join("guest_binaries.rs"), generated).expect("write guest_binaries.rs");
}

/// `<outer target>/guest`: the outer target directory is the first ancestor of `OUT_DIR`
/// holding cargo's `CACHEDIR.TAG`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(|d| d.join("guest"))
        .unwrap_or_else(|| out_dir.join("guest-target"))
}

fn build(workspace: &Path, target_dir: &Path, binaries: &[(&str, &str, &str)]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--release", "--locked", "--target", TRIPLE]);
    for (_, package, binary) in binaries {
        cmd.args(["-p", package, "--bin", binary]);
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if set_by_outer_cargo(&key) {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", RUSTFLAGS);
    let output = cmd
        .output()
        .expect("run the nested cargo build of the guest binaries");
    if !output.status.success() {
        panic!(
            "building the static guest binaries failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Variables the outer cargo sets for build scripts (or that configure the outer build);
/// the user's own cargo configuration (`CARGO_HOME`, `CARGO_NET_*`, `CARGO_HTTP_*`,
/// registries) and the jobserver are kept.
fn set_by_outer_cargo(key: &str) -> bool {
    const KEEP: &[&str] = &["CARGO_HOME", "CARGO_MAKEFLAGS"];
    const KEEP_PREFIXES: &[&str] = &[
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
    ];
    const REMOVE: &[&str] = &[
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_LINKER",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
    ];
    if KEEP.contains(&key) || KEEP_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return false;
    }
    key.starts_with("CARGO")
        || key.starts_with("__CARGO")
        || key.starts_with("DEP_")
        || REMOVE.contains(&key)
}

/// Checks that `path` is a static x86_64 ELF executable, copies it into `OUT_DIR` and adds
/// its constant.
fn embed(generated: &mut String, constant: &str, binary: &str, path: &Path, out_dir: &Path) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("read guest binary {}: {e}", path.display()));
    if let Err(why) = check_static_elf(&bytes) {
        panic!("guest binary {} is unusable: {why}", path.display());
    }
    let copy = out_dir.join(binary);
    std::fs::write(&copy, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", copy.display()));
    let _ = writeln!(
        generated,
        "/// `{binary}`, a static x86_64 executable ({} bytes).\n\
         pub const {constant}: GuestBinary = GuestBinary {{ name: {binary:?}, bytes: include_bytes!({:?}) }};",
        bytes.len(),
        copy.display().to_string()
    );
}

/// An x86_64 ELF executable without a program interpreter (`PT_INTERP`), i.e. static.
fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Err("not a 64-bit ELF file".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    if u16_at(0x12) != 0x3e {
        return Err("not an x86_64 binary".into());
    }
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if at + 4 > bytes.len() {
            return Err("truncated program headers".into());
        }
        if u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) == 3 {
            return Err("dynamically linked (it has a program interpreter)".into());
        }
    }
    Ok(())
}
