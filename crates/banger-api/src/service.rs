//! Where the host reaches a VM's image services: what `vm show`, the TUI and the web console
//! list for each service an image declares beyond banger's own (the guest agent and sshd).

use crate::{ServiceCheck, Vm};

/// The name under which an image declares banger's guest agent among its services.
pub const AGENT_SERVICE: &str = "agent";
/// The TCP port banger's guest agent listens on (`banger-agent --listen-vm-ip`).
pub const AGENT_PORT: u16 = 1024;
/// The name under which an image declares sshd among its services.
pub const SSH_SERVICE: &str = "ssh";
/// The TCP port sshd listens on in every guest.
pub const SSH_PORT: u16 = 22;
/// The longest service name: a DNS label's limit, so `NAME` fits wherever a host name does.
pub const SERVICE_NAME_MAX: usize = 63;

/// The services banger itself declares; clients show them elsewhere (ssh, agent health).
const BANGER_SERVICES: [&str; 2] = [AGENT_SERVICE, SSH_SERVICE];

/// Whether `name` and `port` may declare an image service: `name` a DNS-label-like name
/// (lowercase letters, digits and `-`, starting with a letter, not ending with `-`, at most
/// [`SERVICE_NAME_MAX`] characters, and not `agent` or `ssh`, which banger declares itself),
/// `port` a TCP port other than 22 (sshd) and 1024 (the guest agent). The error says what is
/// wrong and what is allowed.
pub fn check(name: &str, port: u16) -> Result<(), String> {
    const ALLOWED: &str = "a service name is 1 to 63 lowercase letters, digits and '-', \
                           starting with a letter and not ending with '-'";
    if name.is_empty() {
        return Err(format!("the service name is empty; {ALLOWED}"));
    }
    if name.len() > SERVICE_NAME_MAX {
        return Err(format!(
            "the service name {name:?} is {} characters long; {ALLOWED}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "the service name {name:?} contains {bad:?}; {ALLOWED}"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        return Err(format!(
            "the service name {name:?} does not start with a letter or ends with '-'; {ALLOWED}"
        ));
    }
    if name == AGENT_SERVICE || name == SSH_SERVICE {
        return Err(format!(
            "the service name {name:?} is banger's own (the guest agent and sshd are \
             declared by banger); choose another name"
        ));
    }
    match port {
        0 => Err(format!(
            "service {name:?} has port 0; a service listens on a TCP port from 1 to 65535"
        )),
        SSH_PORT | AGENT_PORT => Err(format!(
            "service {name:?} has port {port}, which is {}'s; choose a TCP port from 1 to \
             65535 other than 22 and {AGENT_PORT}",
            if port == SSH_PORT {
                "sshd"
            } else {
                "the guest agent"
            }
        )),
        _ => Ok(()),
    }
}

/// How the host reaches one image service of a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAddress {
    pub name: String,
    pub port: u16,
    /// `http://127.0.0.1:HOSTPORT` when the VM publishes the service's port.
    pub published: Option<String>,
    /// `NAME.DOMAIN:PORT` when banger's DNS serves the VM's name.
    pub dns: Option<String>,
    /// `IP:PORT` on the VM's private network.
    pub direct: String,
}

impl ServiceAddress {
    /// One line for a terminal: the published URL, else the DNS name and the IP address.
    pub fn text(&self) -> String {
        match (&self.published, &self.dns) {
            (Some(url), _) => url.clone(),
            (None, Some(dns)) => format!("{dns} ({})", self.direct),
            (None, None) => self.direct.clone(),
        }
    }

    /// What a browser on the host opens: the published URL, else the private address
    /// (which needs no DNS set up on the host).
    pub fn href(&self) -> String {
        match &self.published {
            Some(url) => url.clone(),
            None => format!("http://{}", self.direct),
        }
    }
}

/// The image services of `vm` (`services`, its image's manifest's, in order) other than the
/// guest agent and sshd, each with its address; `dns_domain` is where banger's DNS serves VM
/// names, when it does ([`crate::DaemonInfo::dns_domain`]).
pub fn service_addresses(
    vm: &Vm,
    services: &[ServiceCheck],
    dns_domain: Option<&str>,
) -> Vec<ServiceAddress> {
    services
        .iter()
        .filter(|s| !BANGER_SERVICES.contains(&s.name.as_str()))
        .map(|s| ServiceAddress {
            name: s.name.clone(),
            port: s.port,
            published: vm
                .published_ports
                .iter()
                .find(|p| p.guest_port == s.port)
                .map(|p| p.url()),
            dns: dns_domain.map(|domain| format!("{}.{domain}:{}", vm.name, s.port)),
            direct: format!("{}:{}", vm.network.ip, s.port),
        })
        .collect()
}
