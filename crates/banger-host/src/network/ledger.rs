//! The record of what a network setup acquired, and the one way each such resource is released.
//! A setup records every resource the moment it exists; on failure the record is released in
//! reverse order. Normal teardown and post-crash reconcile build the same [`Resource`] values
//! from what the store knows and release them through the same [`release`], so there is exactly
//! one code path that removes a bridge, a tap, a rule or restores a sysctl.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Links, NetConfig, NetworkError, forwarding, link, nft};
use crate::runner::CommandRunner;

/// One host resource a network setup acquired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// The bridge link, created because it did not exist.
    Bridge { name: String },
    /// The host's address on the bridge, e.g. `172.30.0.1/24`.
    BridgeAddress { bridge: String, cidr: String },
    /// A VM's tap link.
    Tap { name: String },
    /// banger's nftables table `inet banger`, with its chains.
    NftTable,
    /// The NAT and forward rules of one VM, found by their `banger-vm:<id>` comment.
    NftVmRules { vm: String },
    /// A sysctl banger changed, with the value to put back.
    Sysctl { key: String, previous: String },
}

impl Resource {
    /// Whether several VMs share this resource (bridge, its address, the table, a sysctl), as
    /// opposed to one VM owning it (its tap, its rules). A VM's teardown releases only what it
    /// owns unless the caller passes shared resources explicitly.
    pub fn is_shared(&self) -> bool {
        !matches!(self, Resource::Tap { .. } | Resource::NftVmRules { .. })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Bridge { name } => write!(f, "bridge {name}"),
            Resource::BridgeAddress { bridge, cidr } => write!(f, "address {cidr} on {bridge}"),
            Resource::Tap { name } => write!(f, "tap {name}"),
            Resource::NftTable => write!(f, "nftables table inet {}", nft::TABLE),
            Resource::NftVmRules { vm } => write!(f, "NAT rules of VM {vm}"),
            Resource::Sysctl { key, previous } => write!(f, "sysctl {key} (restoring {previous})"),
        }
    }
}

/// Resources in the order they were acquired. Serializable so a caller can persist the shared
/// ones (notably the previous `ip_forward` value) across a daemon restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Acquired {
    resources: Vec<Resource>,
}

impl Acquired {
    pub fn new() -> Self {
        Acquired::default()
    }

    /// Notes that `resource` now exists and is ours to release.
    pub fn record(&mut self, resource: Resource) {
        tracing::debug!(%resource, "acquired");
        self.resources.push(resource);
    }

    /// In acquisition order.
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Releases every resource, newest first. A failing release does not stop the others; all
    /// failures are returned together.
    pub fn release_all(
        self,
        runner: &dyn CommandRunner,
        links: &dyn Links,
        cfg: &NetConfig,
    ) -> Result<(), ReleaseError> {
        let mut failures = Vec::new();
        for resource in self.resources.into_iter().rev() {
            if let Err(error) = release(runner, links, cfg, &resource) {
                tracing::warn!(%resource, error = %error_chain(&error), "cannot release");
                failures.push(ReleaseFailure { resource, error });
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ReleaseError { failures })
        }
    }
}

impl From<Vec<Resource>> for Acquired {
    fn from(resources: Vec<Resource>) -> Self {
        Acquired { resources }
    }
}

impl IntoIterator for Acquired {
    type Item = Resource;
    type IntoIter = std::vec::IntoIter<Resource>;
    fn into_iter(self) -> Self::IntoIter {
        self.resources.into_iter()
    }
}

/// Releases one resource (links, the bridge and taps, through `links`). Releasing something
/// that is already gone succeeds, so this is safe to repeat and to call on the guesses of a
/// post-crash reconcile.
pub fn release(
    runner: &dyn CommandRunner,
    links: &dyn Links,
    cfg: &NetConfig,
    resource: &Resource,
) -> Result<(), NetworkError> {
    tracing::debug!(%resource, "releasing");
    match resource {
        Resource::Bridge { name } => links.delete(runner, cfg, name),
        Resource::BridgeAddress { bridge, cidr } => link::delete_address(runner, cfg, bridge, cidr),
        Resource::Tap { name } => links.delete(runner, cfg, name),
        Resource::NftTable => nft::delete_table(runner, cfg),
        Resource::NftVmRules { vm } => nft::delete_vm_rules(runner, cfg, vm),
        Resource::Sysctl { key, previous } => forwarding::write(runner, cfg, key, previous),
    }
}

/// One resource that could not be released.
#[derive(Debug)]
pub struct ReleaseFailure {
    pub resource: Resource,
    pub error: NetworkError,
}

/// Releasing resources failed for some of them; every failure is listed with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(failures))]
pub struct ReleaseError {
    pub failures: Vec<ReleaseFailure>,
}

fn describe(failures: &[ReleaseFailure]) -> String {
    let list: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.resource, error_chain(&f.error)))
        .collect();
    let noun = if failures.len() == 1 {
        "resource"
    } else {
        "resources"
    };
    format!(
        "cannot release {} network {noun}: {}",
        failures.len(),
        list.join("; ")
    )
}

pub(crate) use crate::error_chain;
