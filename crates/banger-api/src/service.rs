//! Where the host reaches a VM's image services: what `vm show`, the TUI and the web console
//! list for each service an image declares beyond banger's own (the guest agent and sshd).

use crate::{ServiceCheck, Vm};

/// The services banger itself declares; clients show them elsewhere (ssh, agent health).
const BANGER_SERVICES: [&str; 2] = ["agent", "ssh"];

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
