//! The commands that reach inside a running VM: `vm ssh` (OpenSSH with banger's key and the
//! VM's exact host key), `vm exec` (through the guest agent, via bangerd), `vm logs`,
//! `vm health`, `vm ports`, `vm stats`.

use std::io::Write;
use std::time::Duration;

use banger_agent::frame::{FrameDecoder, FrameKind};
use banger_agent::protocol::{ExecRequest, ExitStatus, Health, ListeningPort, Stats};
use banger_api::{ApiError, ErrorCode, VmState, validate};
use http_body_util::BodyExt;

use crate::cli::{OutputFormat, VmCommand};
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::output;

/// Runs `vm ssh` or `vm exec`, whose exit code is the remote command's.
pub async fn run_remote(command: &VmCommand) -> Result<i32, Failure> {
    match command {
        VmCommand::Ssh { name, command } => ssh(name, command).await,
        VmCommand::Exec { name, cwd, command } => exec(name, cwd.clone(), command).await,
        _ => Err(Failure::internal("not a remote command")),
    }
}

async fn ssh(name: &str, command: &[String]) -> Result<i32, Failure> {
    let daemon = Daemon::locate()?;
    let access = daemon
        .call(async |client| client.ssh_access(name).await)
        .await?;
    if !access.running {
        return Err(Failure::new(
            ApiError::new(
                ErrorCode::InvalidState,
                format!("VM {name:?} is not running"),
            )
            .with_hint(format!("start it with `banger vm start {name}`")),
        ));
    }
    let mut args = vec![
        "-i".to_owned(),
        access.identity_file,
        "-o".into(),
        format!("UserKnownHostsFile={}", access.known_hosts_file),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-p".into(),
        access.port.to_string(),
        format!("{}@{}", access.user, access.host),
    ];
    let interactive = command.is_empty();
    if !interactive {
        args.push("--".into());
        args.extend(command.iter().cloned());
    }
    let code = banger_host::run_interactive("ssh", &args).map_err(|e| {
        Failure::new(
            ApiError::new(ErrorCode::Unavailable, format!("cannot run ssh: {e}"))
                .with_hint("install the OpenSSH client (sudo apt-get install openssh-client)"),
        )
    })?;
    if interactive
        && let Ok(vm) = daemon.client().get_vm(name).await
        && vm.state == VmState::Running
    {
        output::eprint(&format!(
            "banger: VM {name} is still running; stop it with `banger vm stop {name}`\n"
        ));
    }
    Ok(code)
}

async fn exec(name: &str, cwd: Option<String>, command: &[String]) -> Result<i32, Failure> {
    let mut request = ExecRequest::new(command.iter().cloned());
    request.cwd = cwd;
    let body = serde_json::to_vec(&request).map_err(|e| Failure::internal(e.to_string()))?;
    let daemon = Daemon::locate()?;
    let response = daemon
        .call(async |client| client.exec(name, body.clone()).await)
        .await?;
    let mut body = response.into_body();
    let mut decoder = FrameDecoder::new();
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let broken = |what: String| {
        Failure::new(
            ApiError::new(ErrorCode::Unavailable, what)
                .with_hint(format!("`banger vm logs {name}` shows the guest console")),
        )
    };
    loop {
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| broken(format!("the command's output stream broke: {e}")))?
        {
            match frame.kind {
                FrameKind::Stdout => {
                    let _ = stdout.write_all(&frame.payload);
                    let _ = stdout.flush();
                }
                FrameKind::Stderr => {
                    let _ = stderr.write_all(&frame.payload);
                    let _ = stderr.flush();
                }
                FrameKind::Exit => {
                    let status: ExitStatus = serde_json::from_slice(&frame.payload)
                        .map_err(|e| broken(format!("unreadable exit status: {e}")))?;
                    return Ok(status.shell_code());
                }
                FrameKind::Error => {
                    let message = serde_json::from_slice::<serde_json::Value>(&frame.payload)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| String::from_utf8_lossy(&frame.payload).into_owned());
                    return Err(broken(message));
                }
                _ => {}
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(e)) => return Err(broken(format!("the connection to bangerd broke: {e}"))),
            None => {
                return Err(broken(
                    "the command's output ended without its exit status".into(),
                ));
            }
        }
    }
}

/// `NAME:PATH` as (NAME, PATH); a local path (no `:` before the first `/`) is `None`.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (name, path) = spec.split_once(':')?;
    (!name.is_empty() && !name.contains('/')).then_some((name, path))
}

async fn copy(daemon: &Daemon, src: &str, dst: &str) -> Result<String, Failure> {
    let usage = |what: &str| {
        Failure::new(
            ApiError::invalid(what.to_owned())
                .with_hint("banger vm cp LOCAL NAME:DIR, or banger vm cp NAME:PATH LOCAL_DIR"),
        )
    };
    match (remote(src), remote(dst)) {
        (None, Some((name, dir))) => {
            validate::name("VM", name)?;
            let source = std::path::Path::new(src);
            let tar = banger_agent::archive::pack(source, Vec::new())
                .map_err(|e| Failure::new(ApiError::invalid(format!("cannot read {src}: {e}"))))?;
            let dir = if dir.is_empty() { "/root" } else { dir };
            daemon
                .call(async |client| client.copy_in(name, dir, tar.clone()).await)
                .await?;
            Ok(format!("Copied {src} to {name}:{dir}.\n"))
        }
        (Some((name, path)), None) => {
            validate::name("VM", name)?;
            let tar = daemon
                .call(async |client| client.copy_out(name, path).await)
                .await?;
            let dest = std::path::Path::new(dst);
            banger_agent::archive::unpack(std::io::Cursor::new(tar), dest).map_err(|e| {
                Failure::new(ApiError::invalid(format!("cannot write into {dst}: {e}")))
            })?;
            Ok(format!("Copied {name}:{path} to {dst}.\n"))
        }
        (Some(_), Some(_)) => Err(usage("both sides name a VM; one must be local")),
        (None, None) => Err(usage("neither side names a VM (NAME:PATH)")),
    }
}

/// `vm cp`, `vm logs`, `vm health`, `vm ports`, `vm stats`.
pub async fn run(command: &VmCommand, format: OutputFormat) -> Result<(), Failure> {
    let daemon = Daemon::locate()?;
    match command {
        VmCommand::Cp { src, dst } => {
            let text = copy(&daemon, src, dst).await?;
            if format == OutputFormat::Text {
                output::print(&text);
            }
            Ok(())
        }
        VmCommand::Logs { name, follow } => {
            let mut chunk = daemon
                .call(async |client| client.console(name, None).await)
                .await?;
            output::print(&chunk.text);
            if !*follow {
                return Ok(());
            }
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                chunk = daemon
                    .client()
                    .console(name, Some(chunk.next_offset))
                    .await?;
                output::print(&chunk.text);
            }
            Ok(())
        }
        VmCommand::Health { name } => {
            let value = daemon
                .call(async |client| client.guest_info(name, "health").await)
                .await?;
            let text = match format {
                OutputFormat::Json => output::json(&value),
                OutputFormat::Text => {
                    let health: Health = decode(value)?;
                    let mut text = format!(
                        "{}: {} (agent {}, up {})\n",
                        health.hostname,
                        if health.ready { "ready" } else { "not ready" },
                        health.version,
                        humanize(health.uptime_ms)
                    );
                    for stage in &health.boot {
                        text.push_str(&format!("  {:<24} {}\n", stage.name, humanize(stage.at_ms)));
                    }
                    text
                }
            };
            output::print(&text);
            Ok(())
        }
        VmCommand::Ports { name } => {
            let value = daemon
                .call(async |client| client.guest_info(name, "ports").await)
                .await?;
            let text = match format {
                OutputFormat::Json => output::json(&value),
                OutputFormat::Text => {
                    let ports: Vec<ListeningPort> = decode(value)?;
                    let mut text =
                        format!("{:<6} {:<40} {:>5}  PROCESS\n", "PROTO", "ADDRESS", "PORT");
                    for p in &ports {
                        text.push_str(&format!(
                            "{:<6} {:<40} {:>5}  {}\n",
                            format!("{:?}", p.protocol).to_lowercase(),
                            p.address,
                            p.port,
                            p.process.as_deref().unwrap_or("-")
                        ));
                    }
                    text
                }
            };
            output::print(&text);
            Ok(())
        }
        VmCommand::Stats { name } => {
            let value = daemon
                .call(async |client| client.guest_info(name, "stats").await)
                .await?;
            let text = match format {
                OutputFormat::Json => output::json(&value),
                OutputFormat::Text => {
                    let stats: Stats = decode(value)?;
                    let m = &stats.memory;
                    let mut text = format!(
                        "uptime: {}\nload:   {:.2} {:.2} {:.2} ({} CPUs)\nmemory: {} used of {} ({} available)\n",
                        humanize(stats.uptime_ms),
                        stats.load[0],
                        stats.load[1],
                        stats.load[2],
                        stats.cpus,
                        validate::format_size(m.total_bytes.saturating_sub(m.available_bytes)),
                        validate::format_size(m.total_bytes),
                        validate::format_size(m.available_bytes),
                    );
                    for disk in &stats.disks {
                        text.push_str(&format!(
                            "disk {}: {} used of {}\n",
                            disk.path,
                            validate::format_size(disk.used_bytes),
                            validate::format_size(disk.total_bytes)
                        ));
                    }
                    text
                }
            };
            output::print(&text);
            Ok(())
        }
        _ => Err(Failure::internal("not a guest command")),
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Failure> {
    serde_json::from_value(value)
        .map_err(|e| Failure::internal(format!("bangerd sent an answer banger cannot read: {e}")))
}

fn humanize(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        match secs {
            0..3600 => format!("{}m {}s", secs / 60, secs % 60),
            _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
        }
    }
}
