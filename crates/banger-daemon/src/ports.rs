//! Published ports: host TCP ports that bangerd forwards to ports of its VMs. The forwards
//! are part of a VM's spec (stored with it); this module owns their listeners while the VM
//! runs. Each listener is a userspace proxy inside bangerd: a connection accepted on
//! `ADDR:HOSTPORT` is joined to a fresh connection to `GUEST_IP:GUESTPORT` and bytes are
//! copied both ways through bounded buffers, each direction closed on its own (half-close).
//! A proxy needs no `route_localnet`, no nftables DNAT, and works the same for a root daemon
//! and an unprivileged one.
//!
//! Listeners open when a VM starts (at its `network` stage; a start that fails later closes
//! them), when a port is added to a running VM, and when a restarted daemon adopts a running
//! VM; they close when the VM stops, fails, is deleted, or the port is removed. Opening
//! several is all or nothing: every socket is bound before any starts accepting, so a failure
//! at the Nth bind drops the N-1 bound before it at once.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use banger_api::{ApiError, ErrorCode, PublishPortRequest, PublishedPort, Vm, VmState, validate};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Daemon;

/// Size of each direction's copy buffer: a connection holds at most twice this in bangerd.
const COPY_BUFFER: usize = 64 * 1024;
/// How long a forwarded connection waits for the guest to accept it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing a forward waits for its listener task to end.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// The open forwards of every running VM, by VM id.
#[derive(Debug)]
pub struct Forwards {
    runtime: tokio::runtime::Handle,
    open: Mutex<HashMap<String, Vec<Forward>>>,
}

/// One accepting listener; dropping it stops accepting and ends its connections.
#[derive(Debug)]
struct Forward {
    port: PublishedPort,
    task: JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
        // The listener closes when the aborted task is dropped on a worker; wait for that so
        // the port is free when `close` returns (a `port rm` then `port add` must work).
        let deadline = Instant::now() + CLOSE_WAIT;
        while !self.task.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if !self.task.is_finished() {
            tracing::warn!(listen = %self.port.listen(), "a published port's listener did not close in time");
        }
    }
}

impl Forwards {
    pub fn new(runtime: tokio::runtime::Handle) -> Forwards {
        Forwards {
            runtime,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Forward>>> {
        // Every change is a single insert or removal: a panic cannot leave it half-made.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the forwards `ports` of VM `vm_id`, whose guest address is `guest`. All or
    /// nothing: on failure no listener of them is left.
    pub fn open(
        &self,
        vm_id: &str,
        guest: Ipv4Addr,
        ports: &[PublishedPort],
    ) -> Result<(), ApiError> {
        if ports.is_empty() {
            return Ok(());
        }
        let bound = ports
            .iter()
            .map(|port| bind(port).map(|listener| (port.clone(), listener)))
            .collect::<Result<Vec<_>, _>>()?;
        let forwards: Vec<Forward> = bound
            .into_iter()
            .map(|(port, listener)| self.spawn(guest, port, listener))
            .collect::<Result<_, _>>()?;
        tracing::info!(
            vm = vm_id,
            ports = forwards.len(),
            "published ports listening"
        );
        self.lock()
            .entry(vm_id.to_owned())
            .or_default()
            .extend(forwards);
        Ok(())
    }

    fn spawn(
        &self,
        guest: Ipv4Addr,
        port: PublishedPort,
        listener: std::net::TcpListener,
    ) -> Result<Forward, ApiError> {
        let _context = self.runtime.enter();
        let listener = TcpListener::from_std(listener)
            .map_err(|e| ApiError::internal(format!("cannot listen on {}: {e}", port.listen())))?;
        let target = SocketAddr::V4(SocketAddrV4::new(guest, port.guest_port));
        let task = self.runtime.spawn(accept(listener, target, port.listen()));
        Ok(Forward { port, task })
    }

    /// Closes every forward of VM `vm_id` (none open is fine).
    pub fn close(&self, vm_id: &str) {
        let closed = self.lock().remove(vm_id);
        if let Some(forwards) = closed {
            tracing::info!(vm = vm_id, ports = forwards.len(), "published ports closed");
            drop(forwards);
        }
    }

    /// Closes every VM's forwards (the daemon is stopping).
    pub fn close_all(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all);
    }

    /// Closes VM `vm_id`'s forward of `host_port`, if open.
    pub fn close_port(&self, vm_id: &str, host_port: u16) {
        let removed = {
            let mut open = self.lock();
            let Some(forwards) = open.get_mut(vm_id) else {
                return;
            };
            let removed: Vec<Forward> = forwards
                .extract_if(.., |f| f.port.host_port == host_port)
                .collect();
            if forwards.is_empty() {
                open.remove(vm_id);
            }
            removed
        };
        drop(removed);
    }

    /// The host ports open for VM `vm_id`, in the order opened.
    pub fn open_ports(&self, vm_id: &str) -> Vec<u16> {
        self.lock()
            .get(vm_id)
            .map(|f| f.iter().map(|f| f.port.host_port).collect())
            .unwrap_or_default()
    }
}

/// Binds `port`'s host address, with an error that says what holds it and what to do.
fn bind(port: &PublishedPort) -> Result<std::net::TcpListener, ApiError> {
    let address: Ipv4Addr = port.address.parse().map_err(|_| {
        ApiError::internal(format!("published address {:?} is not IPv4", port.address))
    })?;
    // std sets SO_REUSEADDR: a port whose last connections linger in TIME_WAIT (a daemon
    // restart) binds again at once.
    let listener = std::net::TcpListener::bind(SocketAddrV4::new(address, port.host_port))
        .map_err(|e| bind_error(port, &e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ApiError::internal(format!("cannot listen on {}: {e}", port.listen())))?;
    Ok(listener)
}

fn bind_error(port: &PublishedPort, e: &std::io::Error) -> ApiError {
    let listen = port.listen();
    let p = port.host_port;
    match e.kind() {
        std::io::ErrorKind::AddrInUse => ApiError::new(
            ErrorCode::InUse,
            format!("host port {p} ({listen}) is already in use on this host"),
        )
        .with_hint(format!(
            "pick another host port, or stop the program listening there (`ss -ltnp 'sport = :{p}'` names it)"
        )),
        std::io::ErrorKind::PermissionDenied => ApiError::invalid(format!(
            "host port {p} ({listen}) needs privileges bangerd does not have"
        ))
        .with_hint("publish a host port from 1024 up"),
        std::io::ErrorKind::AddrNotAvailable => ApiError::invalid(format!(
            "cannot publish on {listen}: {} is not an address of this host",
            port.address
        ))
        .with_hint("leave the address out for 127.0.0.1, or give one of this host's addresses"),
        _ => ApiError::internal(format!("cannot listen on {listen} (host port {p}): {e}")),
    }
}

/// Accepts connections until aborted; each is proxied by a task of its own, ended with this
/// one (the set aborts them when dropped).
async fn accept(listener: TcpListener, target: SocketAddr, listen: String) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => {
                    connections.spawn(proxy(inbound, target));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(%listen, error = %e, "cannot accept a connection on a published port");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Joins one accepted connection to the guest's port until both directions ended.
async fn proxy(mut inbound: TcpStream, target: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let mut outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%target, error = %e, "the guest refused a forwarded connection");
            return;
        }
        Err(_) => {
            tracing::debug!(%target, "the guest did not accept a forwarded connection in time");
            return;
        }
    };
    let _ = outbound.set_nodelay(true);
    if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
        &mut inbound,
        &mut outbound,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        tracing::debug!(%target, error = %e, "a forwarded connection ended with an error");
    }
}

/// Checks that `ports` could be bound now (binds each and lets it go): a port some program
/// holds is refused before anything is stored.
pub fn check_free(ports: &[PublishedPort]) -> Result<(), ApiError> {
    for port in ports {
        drop(bind(port)?);
    }
    Ok(())
}

/// Refuses a host port another VM publishes, naming it (the store checks again when it
/// records the port).
fn check_unowned(d: &Daemon, ports: &[PublishedPort]) -> Result<(), ApiError> {
    for port in ports {
        if let Some(owner) = d.store.port_owner(port.host_port)? {
            return Err(banger_store::StoreError::PortTaken {
                port: port.host_port,
                vm: owner,
            }
            .into());
        }
    }
    Ok(())
}

/// Where a VM publishes the guest ports its image declares ([`ImageManifest::publish`]) that
/// `requested` does not publish already: each on the same host port when no VM owns it and it
/// can be bound now, otherwise on the first such port from [`FIRST_SPARE_PORT`], on loopback.
///
/// [`ImageManifest::publish`]: banger_api::ImageManifest::publish
pub fn image_defaults(
    d: &Daemon,
    image: &banger_api::Image,
    requested: &[PublishedPort],
) -> Result<Vec<PublishedPort>, ApiError> {
    let owned = |port: u16| d.store.port_owner(port).map(|owner| owner.is_some());
    choose_defaults(&image.manifest.publish, requested, owned, |port| {
        bind(&loopback(port, 0)).is_ok()
    })
}

/// The first host port [`image_defaults`] tries after the guest port's own.
pub const FIRST_SPARE_PORT: u16 = 49152;

fn loopback(host_port: u16, guest_port: u16) -> PublishedPort {
    PublishedPort {
        address: std::net::Ipv4Addr::LOCALHOST.to_string(),
        host_port,
        guest_port,
    }
}

/// [`image_defaults`] with the store and the host as functions: `owned(port)` says a VM
/// publishes it, `bindable(port)` that nothing holds it.
fn choose_defaults(
    wanted: &[u16],
    requested: &[PublishedPort],
    owned: impl Fn(u16) -> Result<bool, banger_store::StoreError>,
    bindable: impl Fn(u16) -> bool,
) -> Result<Vec<PublishedPort>, ApiError> {
    let mut chosen: Vec<PublishedPort> = Vec::new();
    for &guest in wanted {
        if requested.iter().any(|p| p.guest_port == guest) {
            continue;
        }
        let taken = |port: u16, chosen: &[PublishedPort]| -> Result<bool, ApiError> {
            Ok(requested.iter().chain(chosen).any(|p| p.host_port == port)
                || owned(port)?
                || !bindable(port))
        };
        let mut host = None;
        for port in std::iter::once(guest).chain(FIRST_SPARE_PORT..=u16::MAX) {
            if !taken(port, &chosen)? {
                host = Some(port);
                break;
            }
        }
        let host = host.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Exhausted,
                format!("no free host port to publish the image's guest port {guest} on"),
            )
            .with_hint("publish it yourself with --publish HOSTPORT:GUESTPORT")
        })?;
        chosen.push(loopback(host, guest));
    }
    Ok(chosen)
}

/// What `vm create` publishes: validated, owned by no VM, bindable now.
pub fn check_new(
    d: &Daemon,
    requests: &[PublishPortRequest],
) -> Result<Vec<PublishedPort>, ApiError> {
    let ports = validate::published_ports(requests)?;
    check_unowned(d, &ports)?;
    check_free(&ports)?;
    Ok(ports)
}

/// The VM's guest address, as the store keeps it.
fn guest_ip(vm: &Vm) -> Result<Ipv4Addr, ApiError> {
    vm.network.ip.parse().map_err(|_| {
        ApiError::internal(format!(
            "VM {} has an invalid IP {:?}",
            vm.name, vm.network.ip
        ))
    })
}

/// Opens the VM's stored forwards at its start; the start closes them if it fails later.
pub fn open_for_start(d: &Daemon, vm: &Vm) -> Result<(), ApiError> {
    let ports = d.store.vm_published_ports(&vm.id)?;
    d.machines
        .forwards
        .open(&vm.id, guest_ip(vm)?, &ports)
        .map_err(|mut e| {
            e.message = format!("cannot publish VM {}'s ports: {}", vm.name, e.message);
            e
        })
}

/// `GET /v1/vms/{name}/ports/published`.
pub fn list(d: &Daemon, name: &str) -> Result<Vec<PublishedPort>, ApiError> {
    let vm = crate::vm::find(d, name)?;
    Ok(vm.published_ports)
}

/// `POST /v1/vms/{name}/ports/published`: records the forward and, when the VM runs, opens
/// it at once (the listener first: a port that cannot be bound is not stored).
pub fn add(d: &Daemon, name: &str, request: &PublishPortRequest) -> Result<Vm, ApiError> {
    let port = validate::published_port(request)?;
    let vm = crate::vm::find(d, name)?;
    if let Some(existing) = vm
        .published_ports
        .iter()
        .find(|p| p.host_port == port.host_port)
    {
        return Err(ApiError::new(
            ErrorCode::AlreadyExists,
            format!(
                "VM {:?} already publishes host port {} (to guest port {})",
                vm.name, existing.host_port, existing.guest_port
            ),
        )
        .with_hint(format!(
            "remove it first with `banger vm port rm {} {}`",
            vm.name, existing.host_port
        )));
    }
    check_unowned(d, std::slice::from_ref(&port))?;
    let running = match vm.state {
        VmState::Running | VmState::Paused => true,
        VmState::Stopped | VmState::Failed => false,
        VmState::Starting | VmState::Stopping => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                format!(
                    "VM {:?} is {}; ports change once that finishes",
                    vm.name, vm.state
                ),
            )
            .with_hint(format!(
                "wait for the operation in progress (`banger vm show {}`)",
                vm.name
            )));
        }
    };
    if running {
        d.machines
            .forwards
            .open(&vm.id, guest_ip(&vm)?, std::slice::from_ref(&port))?;
    } else {
        check_free(std::slice::from_ref(&port))?;
    }
    match d.store.add_vm_port(&vm.id, &port) {
        Ok(vm) => {
            tracing::info!(vm = %vm.name, listen = %port.listen(), guest_port = port.guest_port, "port published");
            Ok(vm)
        }
        Err(e) => {
            if running {
                d.machines.forwards.close_port(&vm.id, port.host_port);
            }
            Err(e.into())
        }
    }
}

/// `DELETE /v1/vms/{name}/ports/published/{host_port}`.
pub fn remove(d: &Daemon, name: &str, host_port: i64) -> Result<Vm, ApiError> {
    let host_port = validate::port("host port", host_port)?;
    let vm = crate::vm::find(d, name)?;
    if d.store.remove_vm_port(&vm.id, host_port)?.is_none() {
        return Err(ApiError::not_found(format!(
            "VM {:?} does not publish host port {host_port}",
            vm.name
        ))
        .with_hint(format!(
            "list its published ports with `banger vm port list {}`",
            vm.name
        )));
    }
    d.machines.forwards.close_port(&vm.id, host_port);
    tracing::info!(vm = %vm.name, host_port, "port unpublished");
    crate::vm::find(d, &vm.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn forward(host_port: u16, guest_port: u16) -> PublishedPort {
        PublishedPort {
            address: "127.0.0.1".into(),
            host_port,
            guest_port,
        }
    }

    /// A port nothing listens on now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn bindable(port: u16) -> bool {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn a_failed_bind_closes_the_listeners_bound_before_it() {
        let rt = runtime();
        let forwards = Forwards::new(rt.handle().clone());
        let first = free_port();
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();

        let err = forwards
            .open(
                "vm1",
                Ipv4Addr::LOCALHOST,
                &[forward(first, 80), forward(taken, 81)],
            )
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InUse);
        assert_eq!(
            err.message,
            format!("host port {taken} (127.0.0.1:{taken}) is already in use on this host")
        );
        assert!(err.hint.unwrap().contains(&format!("sport = :{taken}")));
        assert!(bindable(first), "the first listener was left open");
        assert!(forwards.open_ports("vm1").is_empty());
    }

    #[test]
    fn a_forward_carries_both_directions_with_half_close_and_closes_on_demand() {
        let rt = runtime();
        let forwards = Forwards::new(rt.handle().clone());
        // The "guest": reads until EOF, then answers with what it read, reversed, and closes.
        let guest = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let guest_port = guest.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = guest.accept().unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got.reverse();
            conn.write_all(&got).unwrap();
        });
        let host_port = free_port();
        forwards
            .open(
                "vm1",
                Ipv4Addr::LOCALHOST,
                &[forward(host_port, guest_port)],
            )
            .unwrap();
        assert_eq!(forwards.open_ports("vm1"), vec![host_port]);

        let mut client = std::net::TcpStream::connect(("127.0.0.1", host_port)).unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).unwrap();
        // Half-close: the guest sees EOF and still answers on the other direction.
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        server.join().unwrap();
        let mut expected = sent.clone();
        expected.reverse();
        assert_eq!(answer.len(), expected.len());
        assert!(answer == expected);

        forwards.close("vm1");
        assert!(bindable(host_port), "the port is free once closed");
        assert!(forwards.open_ports("vm1").is_empty());
    }

    #[test]
    fn closing_one_port_keeps_the_others() {
        let rt = runtime();
        let forwards = Forwards::new(rt.handle().clone());
        let (a, b) = (free_port(), free_port());
        forwards
            .open("vm1", Ipv4Addr::LOCALHOST, &[forward(a, 1), forward(b, 2)])
            .unwrap();
        forwards.close_port("vm1", a);
        assert!(bindable(a));
        assert!(!bindable(b));
        assert_eq!(forwards.open_ports("vm1"), vec![b]);
        forwards.close("vm1");
        assert!(bindable(b));
    }

    #[test]
    fn an_images_ports_go_on_their_own_number_or_the_first_free_spare() {
        let none = |_: u16| Ok(false);
        let all = |_: u16| true;
        // Free: the guest port's own number.
        let chosen = choose_defaults(&[4096], &[], none, all).unwrap();
        assert_eq!(chosen, [loopback(4096, 4096)]);
        // Owned by a VM, or held by a program: the first free spare.
        let chosen = choose_defaults(&[4096], &[], |p| Ok(p == 4096), all).unwrap();
        assert_eq!(chosen, [loopback(FIRST_SPARE_PORT, 4096)]);
        let chosen = choose_defaults(&[4096, 80], &[], none, |p| p != 4096 && p != 80).unwrap();
        assert_eq!(
            chosen,
            [
                loopback(FIRST_SPARE_PORT, 4096),
                loopback(FIRST_SPARE_PORT + 1, 80)
            ]
        );
        // A guest port the create publishes itself is left alone; its host port is not reused.
        let requested = [forward(49152, 4096), forward(80, 8080)];
        let chosen = choose_defaults(&[4096, 80], &requested, none, |p| p != 80).unwrap();
        assert_eq!(chosen, [loopback(FIRST_SPARE_PORT + 1, 80)]);
        // Nothing free at all.
        let err = choose_defaults(&[4096], &[], none, |_| false).unwrap_err();
        assert!(err.message.contains("guest port 4096"), "{}", err.message);
    }

    #[test]
    fn check_free_names_the_taken_port() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let free = free_port();
        assert!(check_free(&[forward(free, 1)]).is_ok());
        let err = check_free(&[forward(free, 1), forward(taken, 2)]).unwrap_err();
        assert!(
            err.message.starts_with(&format!("host port {taken} ")),
            "{}",
            err.message
        );
        let mut elsewhere = forward(free, 1);
        elsewhere.address = "192.0.2.1".into();
        let err = check_free(&[elsewhere]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput);
        assert!(
            err.message.contains("not an address of this host"),
            "{}",
            err.message
        );
    }
}
