//! `banger vm …`: turns the command line into API requests, checking every value with the
//! shared rules first so that a typo costs no round trip and never reaches bangerd's state
//! (bangerd checks again: it is the authority).

use banger_api::validate::{self, MIN_DISK_BYTES, MIN_WORK_DISK_BYTES};
use banger_api::{
    ApiError, CreateVmRequest, Operation, StageState, Timestamp, UpdateVmRequest, Vm, VmAction,
};

use crate::cli::{CreateArgs, OutputFormat, PortCommand, SetArgs, VmCommand};
use crate::daemon::Daemon;
use crate::exit::Failure;
use crate::{operation, output};

/// The start stage after which `--no-wait` returns: the instance runs.
const STARTED_STAGE: &str = "started";

/// Follows a start (or restart) operation to its end, or with `no_wait` until the instance is
/// started; returns the VM as it is then.
async fn follow_start(
    daemon: &Daemon,
    op: Operation,
    no_wait: bool,
    show_stages: bool,
) -> Result<Vm, Failure> {
    let target = op.target.clone();
    if no_wait {
        operation::follow_until(daemon.client(), op, show_stages, STARTED_STAGE).await?;
        return Ok(daemon.client().get_vm(&target).await?);
    }
    let finished = operation::follow(daemon.client(), op, show_stages).await?;
    result_vm(daemon, finished).await
}

/// The VM an operation ended with; asking by name covers a daemon that omits it.
async fn result_vm(daemon: &Daemon, finished: Operation) -> Result<Vm, Failure> {
    match finished
        .result
        .and_then(|value| serde_json::from_value::<Vm>(value).ok())
    {
        Some(vm) => Ok(vm),
        None => Ok(daemon.client().get_vm(&finished.target).await?),
    }
}

async fn vm_result(daemon: &Daemon, vm: &Vm, format: OutputFormat, done: &str) -> String {
    match format {
        OutputFormat::Json => output::json(vm),
        OutputFormat::Text => format!("{done} VM {}.\n\n{}", vm.name, show_text(daemon, vm).await),
    }
}

/// `vm show`'s text, with the addresses of the image's services. Those come from the image
/// and the daemon's DNS domain; when either cannot be read, the VM is shown without them.
async fn show_text(daemon: &Daemon, vm: &Vm) -> String {
    let client = daemon.client();
    let services = match (
        client.get_image(&vm.image.id).await,
        client.daemon_info().await,
    ) {
        (Ok(image), Ok(info)) => banger_api::service::service_addresses(
            vm,
            &image.manifest.services,
            info.dns_domain.as_deref(),
        ),
        (Ok(image), Err(_)) => {
            banger_api::service::service_addresses(vm, &image.manifest.services, None)
        }
        (Err(_), _) => Vec::new(),
    };
    output::vm_show_with_services(vm, &services, Timestamp::now())
}

/// Whether a stage has ended, well or not.
pub fn stage_ended(op: &Operation, stage: &str) -> bool {
    op.stages.iter().any(|s| {
        s.name == stage
            && matches!(
                s.state,
                StageState::Done | StageState::Skipped | StageState::Failed | StageState::Cancelled
            )
    })
}

/// The request of `banger vm create`, once every value passed the shared rules.
pub fn create_request(args: &CreateArgs) -> Result<CreateVmRequest, ApiError> {
    if let Some(name) = &args.name {
        validate::name("VM", name)?;
    }
    if let Some(vcpus) = args.vcpus {
        validate::vcpus(vcpus)?;
    }
    if let Some(memory) = args.memory {
        validate::memory_mib(memory)?;
    }
    let publish = args
        .publish
        .iter()
        .map(|spec| validate::parse_publish(spec))
        .collect::<Result<Vec<_>, _>>()?;
    validate::published_ports(&publish)?;
    Ok(CreateVmRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        vcpus: args.vcpus,
        memory_mib: args.memory,
        disk_bytes: size("disk", args.disk.as_deref(), MIN_DISK_BYTES)?,
        work_disk_bytes: size("work disk", args.work_disk.as_deref(), MIN_WORK_DISK_BYTES)?,
        // An absent flag leaves the choice to bangerd's configuration.
        nat: args.nat.then_some(true),
        vmm: args.vmm.map(Into::into),
        start: Some(!args.no_start),
        publish,
        from_snapshot: match &args.from_snapshot {
            Some(name) => {
                validate::name("snapshot", name)?;
                Some(name.clone())
            }
            None => None,
        },
    })
}

/// `banger vm port …`.
async fn port(command: &PortCommand, format: OutputFormat) -> Result<String, Failure> {
    match command {
        PortCommand::Add { name, spec } => {
            let request = validate::parse_publish(spec)?;
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.publish_port(name, &request).await)
                .await?;
            let host_port = request.host_port;
            Ok(match format {
                OutputFormat::Json => output::json(&vm.published_ports),
                OutputFormat::Text => {
                    let added = vm
                        .published_ports
                        .iter()
                        .find(|p| i64::from(p.host_port) == host_port);
                    let mut text = match added {
                        Some(p) => format!(
                            "Published {} to port {} of VM {}{}.\n",
                            p.listen(),
                            p.guest_port,
                            vm.name,
                            if vm.state.holds_resources() {
                                String::new()
                            } else {
                                " (forwarded from its next start)".to_owned()
                            }
                        ),
                        None => String::new(),
                    };
                    if added.is_some_and(|p| p.address != validate::DEFAULT_PUBLISH_ADDRESS) {
                        text.push_str(
                            "Warning: this port listens beyond 127.0.0.1; other machines that reach that address reach the guest's port.\n",
                        );
                    }
                    text.push('\n');
                    text.push_str(&output::published_ports(&vm));
                    text
                }
            })
        }
        PortCommand::Rm { name, host_port } => {
            let host_port = validate::port("host port", *host_port)?;
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.unpublish_port(name, host_port).await)
                .await?;
            Ok(match format {
                OutputFormat::Json => output::json(&vm.published_ports),
                OutputFormat::Text => format!(
                    "Unpublished host port {host_port} of VM {}.\n\n{}",
                    vm.name,
                    output::published_ports(&vm)
                ),
            })
        }
        PortCommand::List { name } => {
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.get_vm(name).await)
                .await?;
            Ok(match format {
                OutputFormat::Json => output::json(&vm.published_ports),
                OutputFormat::Text => output::published_ports(&vm),
            })
        }
    }
}

/// The request of `banger vm set`; asking to change nothing is refused.
pub fn update_request(args: &SetArgs) -> Result<UpdateVmRequest, ApiError> {
    if args.vcpus.is_none() && args.memory.is_none() && args.work_disk.is_none() {
        return Err(
            ApiError::invalid(format!("nothing to change for VM {:?}", args.name))
                .with_hint("pass --vcpus, --memory or --work-disk"),
        );
    }
    if let Some(vcpus) = args.vcpus {
        validate::vcpus(vcpus)?;
    }
    if let Some(memory) = args.memory {
        validate::memory_mib(memory)?;
    }
    Ok(UpdateVmRequest {
        vcpus: args.vcpus,
        memory_mib: args.memory,
        work_disk_bytes: size("work disk", args.work_disk.as_deref(), MIN_WORK_DISK_BYTES)?,
    })
}

/// Parses and bounds a size flag; `field` names it in messages ("disk", "work disk").
fn size(field: &str, text: Option<&str>, min: i64) -> Result<Option<i64>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    let bytes = validate::parse_size(text)?;
    // Beyond i64 is beyond the maximum too; let the bound produce the message.
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    validate::disk_bytes(field, bytes, min)?;
    Ok(Some(bytes))
}

pub async fn run(command: &VmCommand, format: OutputFormat) -> Result<(), Failure> {
    let text = match command {
        VmCommand::Create(args) => {
            let request = create_request(args)?;
            let daemon = Daemon::locate()?;
            let created = daemon
                .call(async |client| client.create_vm(&request).await)
                .await?;
            let text_mode = format == OutputFormat::Text;
            let (vm, started) = match created.operation {
                Some(op) => {
                    if text_mode && created.vm.pool == Some(banger_api::PoolRole::Taken) {
                        output::eprint(&format!(
                            "Took VM {} ({}) from the warm pool; giving it its identity\n",
                            created.vm.name, created.vm.network.ip
                        ));
                    } else if text_mode {
                        output::eprint(&format!(
                            "Created VM {} ({}); starting it\n",
                            created.vm.name, created.vm.network.ip
                        ));
                    }
                    let vm = follow_start(&daemon, op, args.no_wait, text_mode).await?;
                    (vm, true)
                }
                None => (created.vm, false),
            };
            match format {
                OutputFormat::Json => output::json(&vm),
                OutputFormat::Text if started => format!(
                    "Started VM {}.\n\n{}",
                    vm.name,
                    show_text(&daemon, &vm).await
                ),
                OutputFormat::Text => format!(
                    "Created VM {} (not started).\n\n{}",
                    vm.name,
                    show_text(&daemon, &vm).await
                ),
            }
        }
        VmCommand::Start { name, no_wait } | VmCommand::Restart { name, no_wait } => {
            let (action, verb) = match command {
                VmCommand::Start { .. } => (VmAction::Start, "Starting"),
                _ => (VmAction::Restart, "Restarting"),
            };
            let daemon = Daemon::locate()?;
            let op = daemon
                .call(async |client| client.vm_action(name, action).await)
                .await?;
            let text_mode = format == OutputFormat::Text;
            if text_mode {
                output::eprint(&format!("{verb} VM {name}\n"));
            }
            let vm = follow_start(&daemon, op, *no_wait, text_mode).await?;
            vm_result(
                &daemon,
                &vm,
                format,
                if *no_wait {
                    "Started (not waited for)"
                } else {
                    "Started"
                },
            )
            .await
        }
        VmCommand::Stop { name } => {
            let daemon = Daemon::locate()?;
            let op = daemon
                .call(async |client| client.vm_action(name, VmAction::Stop).await)
                .await?;
            let text_mode = format == OutputFormat::Text;
            if text_mode {
                output::eprint(&format!("Stopping VM {name}\n"));
            }
            let finished = operation::follow(daemon.client(), op, text_mode).await?;
            let vm = result_vm(&daemon, finished).await?;
            vm_result(&daemon, &vm, format, "Stopped").await
        }
        VmCommand::Reset { name } => {
            validate::name("VM", name)?;
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.reset_vm(name).await)
                .await?;
            vm_result(&daemon, &vm, format, "Reset the root of").await
        }
        VmCommand::Snapshot { name, snapshot } => {
            if let Some(snapshot) = snapshot {
                validate::name("snapshot", snapshot)?;
            }
            let request = banger_api::SnapshotVmRequest {
                name: snapshot.clone(),
            };
            let daemon = Daemon::locate()?;
            let snapshot = daemon
                .call(async |client| client.snapshot_vm(name, &request).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&snapshot),
                OutputFormat::Text => format!(
                    "Snapshot {} of VM {name} taken.\n\n{}",
                    snapshot.name,
                    output::snapshot_show(&snapshot, Timestamp::now())
                ),
            }
        }
        VmCommand::Clone {
            source,
            name,
            nat,
            no_wait,
        } => {
            validate::name("VM", name)?;
            let request = banger_api::CloneVmRequest {
                name: name.clone(),
                nat: nat.then_some(true),
            };
            let daemon = Daemon::locate()?;
            let created = daemon
                .call(async |client| client.clone_vm(source, &request).await)
                .await?;
            let text_mode = format == OutputFormat::Text;
            if text_mode {
                output::eprint(&format!(
                    "Cloned VM {source} into {} ({}); starting it\n",
                    created.vm.name, created.vm.network.ip
                ));
            }
            let vm = match created.operation {
                Some(op) => follow_start(&daemon, op, *no_wait, text_mode).await?,
                None => created.vm,
            };
            vm_result(&daemon, &vm, format, "Started clone").await
        }
        VmCommand::Pause { name } | VmCommand::Resume { name } => {
            let pause = matches!(command, VmCommand::Pause { .. });
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.pause_vm(name, pause).await)
                .await?;
            vm_result(
                &daemon,
                &vm,
                format,
                if pause { "Paused" } else { "Resumed" },
            )
            .await
        }
        VmCommand::Logs { .. }
        | VmCommand::Cp { .. }
        | VmCommand::Health { .. }
        | VmCommand::Ports { .. }
        | VmCommand::Stats { .. } => return crate::guest::run(command, format).await,
        VmCommand::Ssh { .. } | VmCommand::Exec { .. } => {
            // Their exit code is the remote command's: `banger::main` runs them.
            return Err(Failure::internal(
                "vm ssh and vm exec run through run_remote",
            ));
        }
        VmCommand::List => {
            let daemon = Daemon::locate()?;
            let vms = daemon.call(async |client| client.list_vms().await).await?;
            match format {
                OutputFormat::Json => output::json(&vms),
                OutputFormat::Text => output::vm_list(&vms),
            }
        }
        VmCommand::Show { name } => {
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.get_vm(name).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&vm),
                OutputFormat::Text => show_text(&daemon, &vm).await,
            }
        }
        VmCommand::Set(args) => {
            let request = update_request(args)?;
            let daemon = Daemon::locate()?;
            let vm = daemon
                .call(async |client| client.update_vm(&args.name, &request).await)
                .await?;
            match format {
                OutputFormat::Json => output::json(&vm),
                OutputFormat::Text => format!(
                    "Updated VM {}.\n\n{}",
                    vm.name,
                    show_text(&daemon, &vm).await
                ),
            }
        }
        VmCommand::Port(command) => port(command, format).await?,
        VmCommand::Delete { name } => {
            let daemon = Daemon::locate()?;
            daemon
                .call(async |client| client.delete_vm(name).await)
                .await?;
            output::deleted("VM", name, format)
        }
    };
    output::print(&text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::exit::{Exit, Failure};
    use banger_api::VmmKind;
    use clap::Parser;

    fn create(args: &[&str]) -> Result<CreateVmRequest, Failure> {
        let argv = ["banger", "vm", "create", "--no-start"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Vm(VmCommand::Create(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        create_request(&args).map_err(Failure::from)
    }

    fn set(args: &[&str]) -> Result<UpdateVmRequest, Failure> {
        let argv = ["banger", "vm", "set"].iter().chain(args);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Vm(VmCommand::Set(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        update_request(&args).map_err(Failure::from)
    }

    /// What the user sees for a refused value, and the exit code.
    fn refusal(result: Result<impl std::fmt::Debug, Failure>) -> String {
        let failure = result.unwrap_err();
        assert_eq!(failure.exit, Exit::InvalidInput);
        output::error(&failure.error, OutputFormat::Text)
    }

    #[test]
    fn a_full_create_becomes_one_request() {
        let request = create(&[
            "--name",
            "dev",
            "--image",
            "debian",
            "--vcpus",
            "2",
            "--memory",
            "2048",
            "--disk",
            "8G",
            "--work-disk",
            "1.5G",
            "--nat",
            "--vmm",
            "qemu",
            "--publish",
            "8080:4096",
            "-p",
            "0.0.0.0:9000:80/tcp",
        ])
        .unwrap();
        assert_eq!(
            request,
            CreateVmRequest {
                name: Some("dev".into()),
                image: Some("debian".into()),
                vcpus: Some(2),
                memory_mib: Some(2048),
                disk_bytes: Some(8 << 30),
                work_disk_bytes: Some(3 << 29),
                nat: Some(true),
                vmm: Some(VmmKind::Qemu),
                start: Some(false),
                publish: vec![
                    banger_api::PublishPortRequest {
                        address: None,
                        host_port: 8080,
                        guest_port: 4096,
                    },
                    banger_api::PublishPortRequest {
                        address: Some("0.0.0.0".into()),
                        host_port: 9000,
                        guest_port: 80,
                    },
                ],
                from_snapshot: None,
            }
        );
    }

    #[test]
    fn bad_publish_flags_are_refused_before_any_request() {
        let udp = refusal(create(&["--publish", "5353:53/udp"]));
        assert!(udp.contains("TCP ports only"), "{udp}");
        let twice = refusal(create(&["-p", "8080:80", "-p", "8080:81"]));
        assert!(
            twice.contains("host port 8080 is published twice"),
            "{twice}"
        );
        let range = refusal(create(&["-p", "70000:80"]));
        assert!(
            range.contains("host port must be from 1 to 65535 (got 70000)"),
            "{range}"
        );
    }

    #[test]
    fn absent_flags_leave_defaults_to_the_daemon() {
        let request = create(&[]).unwrap();
        assert_eq!(
            request,
            CreateVmRequest {
                start: Some(false),
                ..Default::default()
            }
        );
    }

    #[test]
    fn bad_create_values_are_refused_with_exit_3() {
        insta::assert_snapshot!(refusal(create(&["--vcpus", "0"])), @r"
        error: vCPUs must be at least 1 (got 0)
        hint: pass --vcpus with a value from 1 to 32
        ");
        insta::assert_snapshot!(refusal(create(&["--vcpus", "-2"])), @r"
        error: vCPUs must be at least 1 (got -2)
        hint: pass --vcpus with a value from 1 to 32
        ");
        insta::assert_snapshot!(refusal(create(&["--vcpus", "33"])), @r"
        error: vCPUs must be at most 32 (got 33)
        hint: pass --vcpus with a value from 1 to 32
        ");
        insta::assert_snapshot!(refusal(create(&["--memory", "64"])), @r"
        error: memory must be at least 128 MiB (got 64)
        hint: pass --memory in MiB, e.g. --memory 1024
        ");
        insta::assert_snapshot!(refusal(create(&["--memory", "-1"])), @r"
        error: memory must be at least 128 MiB (got -1)
        hint: pass --memory in MiB, e.g. --memory 1024
        ");
        insta::assert_snapshot!(refusal(create(&["--disk", "4X"])), @r#"
        error: "4X" is not a size
        hint: write a number with a unit: 512M, 4G, 1.5T (K, M, G, T are powers of 1024)
        "#);
        insta::assert_snapshot!(refusal(create(&["--disk", "-4G"])), @r#"
        error: "-4G" is not a size
        hint: write a number with a unit: 512M, 4G, 1.5T (K, M, G, T are powers of 1024)
        "#);
        insta::assert_snapshot!(refusal(create(&["--disk", "100M"])), @r"
        error: disk size must be at least 256M (got 100M)
        hint: sizes take a unit: 512M, 4G, 1T
        ");
        insta::assert_snapshot!(refusal(create(&["--work-disk", "1M"])), @r"
        error: work disk size must be at least 64M (got 1M)
        hint: sizes take a unit: 512M, 4G, 1T
        ");
        insta::assert_snapshot!(refusal(create(&["--work-disk", "20T"])), @r"
        error: work disk size must be at most 16T (got 20T)
        hint: sizes take a unit: 512M, 4G, 1T
        ");
        // Beyond i64 but within u64: still the bound's message, not an overflow.
        insta::assert_snapshot!(refusal(create(&["--disk", "9000000T"])), @r"
        error: disk size must be at most 16T (got 8388608T)
        hint: sizes take a unit: 512M, 4G, 1T
        ");
        insta::assert_snapshot!(refusal(create(&["--name", "Bad_Name"])), @r#"
        error: VM name "Bad_Name" contains 'B' (names are lower-case)
        hint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit
        "#);
        insta::assert_snapshot!(refusal(create(&["--name", "dev-"])), @r#"
        error: VM name "dev-" starts or ends with '-'
        hint: use 1-63 characters from a-z, 0-9 and '-', starting and ending with a letter or digit
        "#);
    }

    #[test]
    fn set_needs_something_to_change() {
        insta::assert_snapshot!(refusal(set(&["dev"])), @r#"
        error: nothing to change for VM "dev"
        hint: pass --vcpus, --memory or --work-disk
        "#);
        insta::assert_snapshot!(refusal(set(&["dev", "--vcpus", "-1"])), @r"
        error: vCPUs must be at least 1 (got -1)
        hint: pass --vcpus with a value from 1 to 32
        ");
        insta::assert_snapshot!(refusal(set(&["dev", "--work-disk", "4X"])), @r#"
        error: "4X" is not a size
        hint: write a number with a unit: 512M, 4G, 1.5T (K, M, G, T are powers of 1024)
        "#);
        assert_eq!(
            set(&["dev", "--memory", "4096", "--work-disk", "32G"]).unwrap(),
            UpdateVmRequest {
                vcpus: None,
                memory_mib: Some(4096),
                work_disk_bytes: Some(32 << 30),
            }
        );
    }
}
