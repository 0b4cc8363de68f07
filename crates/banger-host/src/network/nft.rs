//! banger's nftables table, `inet banger`: the one place that holds every rule banger adds.
//! A `postrouting` NAT chain masquerades each `--nat` VM's traffic leaving through another
//! interface; a `forward` filter chain accepts that traffic and its replies, and drops other
//! forwarding between the bridge and the rest of the host's network. Each VM's rules carry the
//! comment `banger-vm:<id>` so they can be found (by handle) and deleted. Documents are built as
//! nftables JSON and applied with `nft -j -f -` through the runner; every document is one
//! atomic transaction.
//!
//! Built with `serde_json` rather than the `nftables` crate: banger writes five rule shapes, which
//! read more plainly as the JSON nft itself prints (and the snapshots show exactly that), and
//! parsing listings stays tolerant of objects a newer nft adds, where a fully typed schema would
//! refuse the whole listing.

use serde_json::{Value, json};

use super::{Acquired, NetConfig, NetworkError, Resource, VmNet, run};
use crate::runner::{CommandRunner, CommandSpec, RunError};

/// The table's name; its family is `inet`.
pub const TABLE: &str = "banger";
const FAMILY: &str = "inet";
const NAT_CHAIN: &str = "postrouting";
const FORWARD_CHAIN: &str = "forward";
/// Priority `srcnat` and `filter`, as numbers because that is what nft's JSON takes.
const SRCNAT_PRIORITY: i32 = 100;
const FILTER_PRIORITY: i32 = 0;

/// The comment that tags every rule of VM `vm_id`.
pub fn vm_comment(vm_id: &str) -> String {
    format!("banger-vm:{vm_id}")
}

fn nft_apply(cfg: &NetConfig, document: &Value) -> CommandSpec {
    cfg.privileged("nft", ["-j", "-f", "-"])
        .stdin(serde_json::to_vec(document).expect("a JSON value always serializes"))
}

fn apply(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    document: &Value,
    action: &str,
) -> Result<(), NetworkError> {
    run(runner, &nft_apply(cfg, document), action).map(drop)
}

fn table() -> Value {
    json!({"table": {"family": FAMILY, "name": TABLE}})
}

fn chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"chain": {
        "family": FAMILY, "table": TABLE, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept",
    }})
}

fn rule(chain: &str, comment: &str, expr: Vec<Value>) -> Value {
    json!({"rule": {
        "family": FAMILY, "table": TABLE, "chain": chain,
        "comment": comment, "expr": expr,
    }})
}

fn meta(key: &str, op: &str, value: &str) -> Value {
    json!({"match": {"op": op, "left": {"meta": {"key": key}}, "right": value}})
}

fn ip(field: &str, value: &str) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": field}}, "right": value}})
}

/// The commands that create the table, its chains and the rules no VM owns.
fn table_commands(cfg: &NetConfig) -> Vec<Value> {
    let br = cfg.bridge.as_str();
    vec![
        json!({"add": table()}),
        json!({"add": chain(NAT_CHAIN, "nat", "postrouting", SRCNAT_PRIORITY)}),
        json!({"add": chain(FORWARD_CHAIN, "filter", "forward", FILTER_PRIORITY)}),
        // VMs' own accept rules are inserted before these two, so only what a NAT VM sends
        // (and its replies) crosses between the bridge and the host's other interfaces.
        json!({"add": rule(FORWARD_CHAIN, "banger: only --nat VMs reach past the bridge", vec![
            meta("iifname", "==", br),
            meta("oifname", "!=", br),
            json!({"drop": null}),
        ])}),
        json!({"add": rule(FORWARD_CHAIN, "banger: only replies reach VMs from outside", vec![
            meta("iifname", "!=", br),
            meta("oifname", "==", br),
            json!({"drop": null}),
        ])}),
    ]
}

/// The commands that add `vm`'s rules.
fn vm_commands(cfg: &NetConfig, vm: &VmNet) -> Vec<Value> {
    let br = cfg.bridge.as_str();
    let ip_text = vm.ip.to_string();
    let comment = vm_comment(&vm.id);
    vec![
        json!({"insert": rule(FORWARD_CHAIN, &comment, vec![
            meta("iifname", "==", br),
            ip("saddr", &ip_text),
            meta("oifname", "!=", br),
            json!({"accept": null}),
        ])}),
        json!({"insert": rule(FORWARD_CHAIN, &comment, vec![
            meta("iifname", "!=", br),
            meta("oifname", "==", br),
            ip("daddr", &ip_text),
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}),
            json!({"accept": null}),
        ])}),
        json!({"add": rule(NAT_CHAIN, &comment, vec![
            ip("saddr", &ip_text),
            meta("oifname", "!=", br),
            json!({"masquerade": null}),
        ])}),
    ]
}

fn document(commands: Vec<Value>) -> Value {
    json!({ "nftables": commands })
}

/// Creating with `add` and deleting in the same transaction deletes the table whether or not it
/// existed, in one call and without parsing nft's error text.
fn delete_table_commands() -> Vec<Value> {
    vec![json!({"add": table()}), json!({"delete": table()})]
}

pub(crate) fn table_document(cfg: &NetConfig) -> Value {
    document(table_commands(cfg))
}

pub(crate) fn vm_rules_document(cfg: &NetConfig, vm: &VmNet, stale: &[RuleHandle]) -> Value {
    let mut commands: Vec<Value> = stale.iter().map(RuleHandle::delete).collect();
    commands.extend(vm_commands(cfg, vm));
    document(commands)
}

pub(crate) fn delete_table_document() -> Value {
    document(delete_table_commands())
}

pub(crate) fn rebuild_document(cfg: &NetConfig, vms: &[VmNet]) -> Value {
    let mut commands = delete_table_commands();
    if vms.iter().any(|vm| vm.nat) {
        commands.extend(table_commands(cfg));
        for vm in vms.iter().filter(|vm| vm.nat) {
            commands.extend(vm_commands(cfg, vm));
        }
    }
    document(commands)
}

/// A rule found in the table, by chain and handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleHandle {
    chain: String,
    handle: u64,
}

impl RuleHandle {
    fn delete(&self) -> Value {
        json!({"delete": {"rule": {
            "family": FAMILY, "table": TABLE, "chain": self.chain, "handle": self.handle,
        }}})
    }
}

fn unexpected(cmd: &CommandSpec, reason: impl Into<String>) -> NetworkError {
    NetworkError::UnexpectedOutput {
        command: cmd.display(),
        reason: reason.into(),
    }
}

/// The objects of an `nft -j list ...` answer.
fn objects(cmd: &CommandSpec, stdout: &str) -> Result<Vec<Value>, NetworkError> {
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut value: Value =
        serde_json::from_str(stdout).map_err(|e| unexpected(cmd, e.to_string()))?;
    match value.get_mut("nftables").map(Value::take) {
        Some(Value::Array(objects)) => Ok(objects),
        _ => Err(unexpected(cmd, "no `nftables` array")),
    }
}

fn table_exists(runner: &dyn CommandRunner, cfg: &NetConfig) -> Result<bool, NetworkError> {
    let cmd = cfg.privileged("nft", ["-j", "list", "tables"]);
    let out = run(runner, &cmd, "list nftables tables")?;
    Ok(objects(&cmd, &out.stdout_lossy())?.iter().any(|o| {
        let t = &o["table"];
        t["family"] == FAMILY && t["name"] == TABLE
    }))
}

/// The handles of `vm_id`'s rules; `None` when the table does not exist.
fn vm_rule_handles(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    vm_id: &str,
) -> Result<Option<Vec<RuleHandle>>, NetworkError> {
    let cmd = cfg.privileged("nft", ["-j", "list", "table", FAMILY, TABLE]);
    let out = match runner.run(&cmd) {
        Ok(out) => out,
        Err(RunError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => {
            return Ok(None);
        }
        Err(error) => {
            return Err(NetworkError::command(
                format!("list nftables table {FAMILY} {TABLE}"),
                error,
            ));
        }
    };
    let comment = vm_comment(vm_id);
    let mut handles = Vec::new();
    for object in objects(&cmd, &out.stdout_lossy())? {
        let rule = &object["rule"];
        if rule["comment"] != comment.as_str() {
            continue;
        }
        let (Some(chain), Some(handle)) = (rule["chain"].as_str(), rule["handle"].as_u64()) else {
            return Err(unexpected(&cmd, "a rule without chain or handle"));
        };
        handles.push(RuleHandle {
            chain: chain.to_owned(),
            handle,
        });
    }
    Ok(Some(handles))
}

/// Adds `vm`'s rules, creating the table first when it does not exist. Rules the VM still has
/// from an earlier run are replaced in the same transaction.
pub(crate) fn add_vm_rules(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    vm: &VmNet,
    acquired: &mut Acquired,
) -> Result<(), NetworkError> {
    let stale = if table_exists(runner, cfg)? {
        vm_rule_handles(runner, cfg, &vm.id)?.unwrap_or_default()
    } else {
        apply(
            runner,
            cfg,
            &table_document(cfg),
            &format!("create nftables table {FAMILY} {TABLE}"),
        )?;
        acquired.record(Resource::NftTable);
        Vec::new()
    };
    apply(
        runner,
        cfg,
        &vm_rules_document(cfg, vm, &stale),
        &format!("add the NAT rules of VM {}", vm.id),
    )?;
    acquired.record(Resource::NftVmRules { vm: vm.id.clone() });
    Ok(())
}

/// Deletes `vm_id`'s rules; none, or no table, is fine.
pub(crate) fn delete_vm_rules(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    vm_id: &str,
) -> Result<(), NetworkError> {
    let handles = vm_rule_handles(runner, cfg, vm_id)?.unwrap_or_default();
    if handles.is_empty() {
        return Ok(());
    }
    let commands = handles.iter().map(RuleHandle::delete).collect();
    apply(
        runner,
        cfg,
        &document(commands),
        &format!("delete the NAT rules of VM {vm_id}"),
    )
}

/// Deletes the whole table; a missing table is fine.
pub(crate) fn delete_table(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
) -> Result<(), NetworkError> {
    apply(
        runner,
        cfg,
        &delete_table_document(),
        &format!("delete nftables table {FAMILY} {TABLE}"),
    )
}

/// Replaces the table with one holding exactly the rules of the NAT VMs among `vms`,
/// atomically; with no NAT VM the table is removed. The daemon calls this at start with the NAT VMs its store says are
/// running, which also clears rules a crash left behind. Without `nft` installed and no NAT VM
/// there is nothing to do.
pub fn rebuild_nat_table(
    runner: &dyn CommandRunner,
    cfg: &NetConfig,
    vms: &[VmNet],
) -> Result<(), NetworkError> {
    match runner.run(&nft_apply(cfg, &rebuild_document(cfg, vms))) {
        Ok(_) => Ok(()),
        Err(error) if nft_missing(&error) && !vms.iter().any(|vm| vm.nat) => Ok(()),
        Err(error) => Err(NetworkError::command(
            format!("rebuild nftables table {FAMILY} {TABLE}"),
            error,
        )),
    }
}

/// `nft` is not installed: run directly, or behind sudo (which reports it on stderr).
fn nft_missing(error: &RunError) -> bool {
    match error {
        RunError::NotFound { program } => program == "nft",
        RunError::Failed { stderr, .. } => stderr.contains("nft: command not found"),
        RunError::Spawn { .. } | RunError::Cancelled { .. } => false,
    }
}
