//! VM records and the allocation of what makes each VM unique on the host: its name, guest
//! IP, MAC and vsock CID. Allocation happens inside one `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's write lock before reading, so concurrent creators (threads sharing a
//! `Store`, several `Store`s, several processes) see each other's choices and never hand out
//! a value twice; the UNIQUE constraints are the backstop. Values of deleted VMs are reused,
//! lowest first.
//!
//! The same transaction decides admission: a VM becomes one that holds host CPU and memory
//! (recorded as `starting`, or moved there) only after an [`Admit`] check has seen what every
//! other VM holding resources reserves, read under the write lock, so two starts that each fit
//! alone but not together cannot both pass.

use std::net::Ipv4Addr;

use banger_api::{
    ApiError, ImageRef, PoolRole, PublishedPort, Timestamp, Vm, VmNetwork, VmRuntime, VmState,
    VmmKind,
};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::names::random_name;
use crate::network::mac_for_ip;
use crate::store::{RowReader, to_i64};
use crate::{NetworkPool, Store, StoreError};

const TABLE: &str = "vms";

/// Lowest vsock CID a guest can have: 0-2 are the hypervisor, local and host.
const FIRST_CID: i64 = 3;
/// Highest usable CID: `u32::MAX` is `VMADDR_CID_ANY`.
const LAST_CID: i64 = u32::MAX as i64 - 1;

/// Random names tried before falling back to a numeric suffix.
const NAME_ATTEMPTS: usize = 32;

/// Every VM query selects these columns, joined to the image for its name, so that a list
/// is one statement however many VMs there are.
macro_rules! select_vms {
    ($tail:literal) => {
        concat!(
            "SELECT v.id, v.name, v.image_id, i.name, v.vcpus, v.memory_mib, v.disk_bytes,
                    v.work_disk_bytes, v.nat, v.vmm, v.state, v.ip, v.gateway, v.prefix_len,
                    v.mac, v.vsock_cid, v.created_at, v.updated_at, v.runtime, v.last_error,
                    v.pool
             FROM vms v LEFT JOIN images i ON i.id = v.image_id ",
            $tail
        )
    };
}

/// What the daemon asks for when it creates a VM; the store adds id, IP, MAC, CID and
/// timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// Generated (`adjective-noun`) when `None`.
    pub name: Option<String>,
    pub image_id: String,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
    pub nat: bool,
    pub vmm: VmmKind,
    pub state: VmState,
    /// Host ports to forward to the VM (validated by the caller); a host port another VM
    /// publishes is refused with [`StoreError::PortTaken`].
    pub published_ports: Vec<PublishedPort>,
    /// A VM of the warm pool (hidden) when set.
    pub pool: Option<PoolRole>,
}

/// Host CPU and guest memory that the VMs holding resources reserve together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub vcpus: u64,
    pub memory_mib: u64,
    /// How many VMs hold them.
    pub vms: u32,
}

/// What a VM about to hold host resources asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand<'a> {
    pub vm: &'a str,
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// Decides whether a VM may hold host resources given what the others reserve; runs inside
/// the transaction that records it as holding them, and its refusal is returned as
/// [`StoreError::Refused`] with nothing written.
pub type Admit<'a> = &'a dyn Fn(&Demand<'_>, Reserved) -> Result<(), ApiError>;

/// The spec of the VMs a warm pool keeps: a `vm create` asking for exactly this takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub vcpus: u32,
    pub memory_mib: u32,
    pub disk_bytes: u64,
    pub work_disk_bytes: u64,
}

/// A change of a VM's resources; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmResources {
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u32>,
    pub work_disk_bytes: Option<u64>,
}

impl Store {
    /// Records a new VM, allocating its name (when not given), guest IP from `pool`, MAC and
    /// vsock CID.
    pub fn create_vm(&self, new: &NewVm, pool: &NetworkPool) -> Result<Vm, StoreError> {
        self.create_vm_with_id(new, pool, None)
    }

    /// [`Store::create_vm`] under the id `preferred` when no VM has it yet (a fresh one
    /// otherwise): the daemon names a VM after the Firecracker started for it ahead of need.
    pub fn create_vm_with_id(
        &self,
        new: &NewVm,
        pool: &NetworkPool,
        preferred: Option<&str>,
    ) -> Result<Vm, StoreError> {
        self.create_vm_admitted(new, pool, preferred, None)
    }

    /// [`Store::create_vm_with_id`] where a VM recorded in a state that holds resources must
    /// first pass `admit`, in the same transaction.
    pub fn create_vm_admitted(
        &self,
        new: &NewVm,
        pool: &NetworkPool,
        preferred: Option<&str>,
        admit: Option<Admit<'_>>,
    ) -> Result<Vm, StoreError> {
        let disk_bytes = to_i64("disk_bytes", new.disk_bytes)?;
        let work_disk_bytes = to_i64("work_disk_bytes", new.work_disk_bytes)?;
        let mut rng = rand::rng();

        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let image_name: String = tx
            .prepare_cached("SELECT name FROM images WHERE id = ?1")?
            .query_row([&new.image_id], |row| row.get(0))
            .optional()?
            .ok_or_else(|| StoreError::ImageNotFound {
                image: new.image_id.clone(),
            })?;
        let name = claim_name(&tx, new.name.as_deref(), &mut rng)?;
        if let Some(admit) = admit
            && new.state.holds_resources()
        {
            let demand = Demand {
                vm: &name,
                vcpus: new.vcpus,
                memory_mib: new.memory_mib,
            };
            admit(&demand, reserved_by_others(&tx, None)?).map_err(StoreError::Refused)?;
        }
        let ip = lowest_free_ip(&tx, pool)?;
        let vsock_cid = lowest_free_cid(&tx)?;
        let mac = mac_for_ip(ip);
        let id = match preferred {
            Some(id) if !id_taken(&tx, id)? => id.to_owned(),
            _ => fresh_id(&tx, &mut rng)?,
        };
        let now = Timestamp::now();
        tx.prepare_cached(
            "INSERT INTO vms (id, name, image_id, vcpus, memory_mib, disk_bytes, work_disk_bytes,
                              nat, vmm, state, ip, gateway, prefix_len, mac, vsock_cid,
                              created_at, updated_at, pool)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16,
                     ?17)",
        )?
        .execute(params![
            id,
            name,
            new.image_id,
            new.vcpus,
            new.memory_mib,
            disk_bytes,
            work_disk_bytes,
            new.nat,
            new.vmm.as_str(),
            new.state.as_str(),
            ip.to_string(),
            pool.gateway().to_string(),
            pool.prefix_len(),
            mac,
            vsock_cid,
            now.as_millis(),
            new.pool.map(PoolRole::as_str),
        ])?;
        for port in &new.published_ports {
            insert_port(&tx, &id, port)?;
        }
        tx.commit()?;
        tracing::debug!(vm = %name, %ip, vsock_cid, "allocated a VM");
        Ok(Vm {
            id,
            name,
            image: ImageRef {
                id: new.image_id.clone(),
                name: image_name,
            },
            vcpus: new.vcpus,
            memory_mib: new.memory_mib,
            disk_bytes: new.disk_bytes,
            work_disk_bytes: new.work_disk_bytes,
            nat: new.nat,
            vmm: new.vmm,
            state: new.state,
            network: VmNetwork {
                ip: ip.to_string(),
                gateway: pool.gateway().to_string(),
                prefix_len: pool.prefix_len(),
                mac,
                vsock_cid,
            },
            runtime: None,
            last_error: None,
            work_seed: None,
            published_ports: sorted_ports(new.published_ports.clone()),
            pool: new.pool,
            created_at: now,
            updated_at: now,
        })
    }

    /// Every VM, ordered by name.
    pub fn list_vms(&self) -> Result<Vec<Vm>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(select_vms!("ORDER BY v.name"))?;
        let mut rows = stmt.query([])?;
        let mut vms = Vec::new();
        while let Some(row) = rows.next()? {
            vms.push(decode_vm(row)?);
        }
        let mut ports = all_ports(&conn)?;
        for vm in &mut vms {
            vm.published_ports = ports.remove(&vm.id).unwrap_or_default();
        }
        Ok(vms)
    }

    /// The VM whose id or, failing that, name is `name_or_id`.
    pub fn find_vm(&self, name_or_id: &str) -> Result<Option<Vm>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(select_vms!(
            "WHERE v.id = ?1 OR v.name = ?1 ORDER BY v.id = ?1 DESC LIMIT 1"
        ))?;
        let mut rows = stmt.query([name_or_id])?;
        match rows.next()? {
            Some(row) => {
                let mut vm = decode_vm(row)?;
                vm.published_ports = vm_ports(&conn, &vm.id)?;
                Ok(Some(vm))
            }
            None => Ok(None),
        }
    }

    /// Hands a ready VM of the warm pool to a user: the oldest paused one of `image_id` with
    /// exactly this spec (and no NAT) is renamed `name` (generated when `None`), becomes
    /// `taken` and `starting` (its take is a start), in one transaction, so two creates never take the same VM. `None` when the
    /// pool has none; a taken name is refused as by [`Store::create_vm`].
    pub fn take_pooled_vm(
        &self,
        image_id: &str,
        spec: &PoolSpec,
        name: Option<&str>,
    ) -> Result<Option<Vm>, StoreError> {
        let mut rng = rand::rng();
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM vms WHERE pool = 'ready' AND state = 'paused' AND image_id = ?1
                   AND vcpus = ?2 AND memory_mib = ?3 AND disk_bytes = ?4
                   AND work_disk_bytes = ?5 AND nat = 0
                 ORDER BY created_at, id LIMIT 1",
            )?
            .query_row(
                params![
                    image_id,
                    spec.vcpus,
                    spec.memory_mib,
                    to_i64("disk_bytes", spec.disk_bytes)?,
                    to_i64("work_disk_bytes", spec.work_disk_bytes)?,
                ],
                |row| row.get(0),
            )
            .optional()?;
        let Some(id) = found else {
            return Ok(None);
        };
        let name = claim_name(&tx, name, &mut rng)?;
        tx.prepare_cached(
            "UPDATE vms SET name = ?2, pool = 'taken', state = 'starting', updated_at = ?3
             WHERE id = ?1",
        )?
        .execute(params![id, name, Timestamp::now().as_millis()])?;
        tx.commit()?;
        drop(conn);
        self.find_vm(&id)
    }

    /// The VMs of the warm pool (templates and ready ones), hidden from users.
    pub fn pool_vms(&self) -> Result<Vec<Vm>, StoreError> {
        Ok(self
            .list_vms()?
            .into_iter()
            .filter(|vm| matches!(vm.pool, Some(PoolRole::Template | PoolRole::Ready)))
            .collect())
    }

    /// How many ready VMs each image's pool keeps, by image name.
    pub fn pool_sizes(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT image, size FROM pool_sizes ORDER BY image")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let mut sizes = Vec::new();
        for row in rows {
            let (image, size) = row?;
            sizes.push((image, u32::try_from(size).unwrap_or(0)));
        }
        Ok(sizes)
    }

    /// Sets how many ready VMs the pool of image `image` keeps. 0 is kept too: it says the
    /// pool was turned off, over what the configuration asks for.
    pub fn set_pool_size(&self, image: &str, size: u32) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "INSERT INTO pool_sizes (image, size) VALUES (?1, ?2)
                 ON CONFLICT (image) DO UPDATE SET size = excluded.size",
            )?
            .execute(params![image, size])?;
        Ok(())
    }

    /// The host ports forwarded to the VM with `id`, by host port.
    pub fn vm_published_ports(&self, id: &str) -> Result<Vec<PublishedPort>, StoreError> {
        vm_ports(&self.conn(), id)
    }

    /// Adds a forward to the VM with `id`; refused with [`StoreError::PortTaken`] when a VM
    /// (this one included) publishes its host port already. Returns the VM as stored.
    pub fn add_vm_port(&self, id: &str, port: &PublishedPort) -> Result<Vm, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if vm_by_id(&tx, id)?.is_none() {
            return Err(vm_not_found(id));
        }
        insert_port(&tx, id, port)?;
        let vm = vm_by_id(&tx, id)?.ok_or_else(|| vm_not_found(id))?;
        tx.commit()?;
        Ok(vm)
    }

    /// Removes the VM's forward of `host_port`, returning it (`None` when the VM has none).
    pub fn remove_vm_port(
        &self,
        id: &str,
        host_port: u16,
    ) -> Result<Option<PublishedPort>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = vm_ports(&tx, id)?
            .into_iter()
            .find(|p| p.host_port == host_port);
        if removed.is_some() {
            tx.prepare_cached(
                "DELETE FROM vm_published_ports WHERE vm_id = ?1 AND host_port = ?2",
            )?
            .execute(params![id, host_port])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// The name of the VM that publishes `host_port`, if any.
    pub fn port_owner(&self, host_port: u16) -> Result<Option<String>, StoreError> {
        port_owner(&self.conn(), host_port)
    }

    /// The address of the VM called `name` (not an id): one row through the name's unique
    /// index, for the DNS server, which asks at every question. The warm pool's hidden VMs
    /// have no name in DNS; a VM taken from it has its user's name from the take on.
    pub fn vm_ip_by_name(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT ip FROM vms WHERE name = ?1 AND (pool IS NULL OR pool = 'taken')",
        )?;
        Ok(stmt.query_row([name], |row| row.get(0)).optional()?)
    }

    /// The name of the VM holding address `ip`, through the address's unique index (reverse
    /// DNS).
    pub fn vm_name_by_ip(&self, ip: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM vms WHERE ip = ?1 AND (pool IS NULL OR pool = 'taken')",
        )?;
        Ok(stmt.query_row([ip], |row| row.get(0)).optional()?)
    }

    /// Changes the given resources of the VM with `id` and returns it as stored.
    pub fn update_vm_resources(&self, id: &str, change: &VmResources) -> Result<Vm, StoreError> {
        let work_disk_bytes = change
            .work_disk_bytes
            .map(|bytes| to_i64("work_disk_bytes", bytes))
            .transpose()?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx
            .prepare_cached(
                "UPDATE vms SET vcpus = COALESCE(?2, vcpus),
                                memory_mib = COALESCE(?3, memory_mib),
                                work_disk_bytes = COALESCE(?4, work_disk_bytes),
                                updated_at = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                change.vcpus,
                change.memory_mib,
                work_disk_bytes,
                Timestamp::now().as_millis(),
            ])?;
        if changed == 0 {
            return Err(vm_not_found(id));
        }
        let vm = vm_by_id(&tx, id)?.ok_or_else(|| vm_not_found(id))?;
        tx.commit()?;
        Ok(vm)
    }

    /// Records what the VM with `id` is doing now.
    pub fn set_vm_state(&self, id: &str, state: VmState) -> Result<(), StoreError> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached("UPDATE vms SET state = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, state.as_str(), Timestamp::now().as_millis()])?;
        if changed == 0 {
            return Err(vm_not_found(id));
        }
        Ok(())
    }

    /// Moves the VM with `id` from one of `from` to `to` in one transaction, so that two
    /// requests cannot both start (or stop) the same VM. Returns the VM as it was before.
    /// `action` completes the refusal's message ("VM \"dev\" is running; <action>").
    pub fn transition_vm(
        &self,
        id: &str,
        from: &[VmState],
        to: VmState,
        action: &str,
        hint: Option<&str>,
    ) -> Result<Vm, StoreError> {
        self.transition_vm_admitted(id, from, to, action, hint, None)
    }

    /// [`Store::transition_vm`] where a move that makes the VM hold resources (from a state
    /// that does not) must first pass `admit`, in the same transaction.
    pub fn transition_vm_admitted(
        &self,
        id: &str,
        from: &[VmState],
        to: VmState,
        action: &str,
        hint: Option<&str>,
        admit: Option<Admit<'_>>,
    ) -> Result<Vm, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let vm = vm_by_id(&tx, id)?.ok_or_else(|| vm_not_found(id))?;
        if !from.contains(&vm.state) {
            return Err(StoreError::WrongState {
                name: vm.name,
                state: vm.state,
                action: action.to_owned(),
                hint: hint.map(str::to_owned),
            });
        }
        if let Some(admit) = admit
            && to.holds_resources()
            && !vm.state.holds_resources()
        {
            let demand = Demand {
                vm: &vm.name,
                vcpus: vm.vcpus,
                memory_mib: vm.memory_mib,
            };
            admit(&demand, reserved_by_others(&tx, Some(id))?).map_err(StoreError::Refused)?;
        }
        tx.prepare_cached("UPDATE vms SET state = ?2, updated_at = ?3 WHERE id = ?1")?
            .execute(params![id, to.as_str(), Timestamp::now().as_millis()])?;
        tx.commit()?;
        Ok(vm)
    }

    /// Records the VMM process now running the VM (or `None` once it is gone), its state and
    /// why it last failed, in one write.
    pub fn set_vm_run_state(
        &self,
        id: &str,
        state: VmState,
        runtime: Option<&VmRuntime>,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        let runtime = runtime
            .map(serde_json::to_string)
            .transpose()
            .map_err(|source| StoreError::EncodeVm {
                what: "runtime",
                vm: id.to_owned(),
                source,
            })?;
        let conn = self.conn();
        let changed = conn
            .prepare_cached(
                "UPDATE vms SET state = ?2, runtime = ?3, last_error = ?4, updated_at = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state.as_str(),
                runtime,
                last_error,
                Timestamp::now().as_millis()
            ])?;
        if changed == 0 {
            return Err(vm_not_found(id));
        }
        Ok(())
    }

    /// Records the fingerprint of the work seed the VM's work disk was made from.
    pub fn set_vm_work_seed(&self, id: &str, fingerprint: &str) -> Result<(), StoreError> {
        let conn = self.conn();
        let changed = conn
            .prepare_cached("UPDATE vms SET work_seed = ?2 WHERE id = ?1")?
            .execute(params![id, fingerprint])?;
        if changed == 0 {
            return Err(vm_not_found(id));
        }
        Ok(())
    }

    /// The fingerprint of the work seed the VM's work disk was made from, when recorded.
    pub fn vm_work_seed(&self, id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached("SELECT work_seed FROM vms WHERE id = ?1")?
            .query_row([id], |row| row.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// What the VMs holding resources reserve now.
    pub fn reserved(&self) -> Result<Reserved, StoreError> {
        reserved_by_others(&self.conn(), None)
    }

    /// Forgets the VM with `id`, returning it as it was. Its name, IP, MAC and CID become
    /// free for the next VM.
    pub fn delete_vm(&self, id: &str) -> Result<Vm, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let vm = vm_by_id(&tx, id)?.ok_or_else(|| vm_not_found(id))?;
        tx.prepare_cached("DELETE FROM vms WHERE id = ?1")?
            .execute([id])?;
        tx.commit()?;
        Ok(vm)
    }
}

/// What the VMs holding resources, other than `except`, reserve. States are filtered here
/// rather than in SQL so that [`VmState::holds_resources`] stays the one definition.
fn reserved_by_others(conn: &Connection, except: Option<&str>) -> Result<Reserved, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, state, vcpus, memory_mib FROM vms")?;
    let mut rows = stmt.query([])?;
    let mut reserved = Reserved::default();
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        if except == Some(id.as_str()) {
            continue;
        }
        let state: String = row.get(1)?;
        let state: VmState = state.parse().map_err(|detail| StoreError::Corrupt {
            table: TABLE,
            id: id.clone(),
            detail,
        })?;
        if state.holds_resources() {
            // Stored from u32s: never negative.
            reserved.vcpus += u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
            reserved.memory_mib += u64::try_from(row.get::<_, i64>(3)?).unwrap_or(0);
            reserved.vms += 1;
        }
    }
    Ok(reserved)
}

fn vm_not_found(id: &str) -> StoreError {
    StoreError::NotFound {
        kind: "VM",
        name: id.to_owned(),
    }
}

fn vm_by_id(conn: &Connection, id: &str) -> Result<Option<Vm>, StoreError> {
    let mut stmt = conn.prepare_cached(select_vms!("WHERE v.id = ?1"))?;
    let mut rows = stmt.query([id])?;
    match rows.next()? {
        Some(row) => {
            let mut vm = decode_vm(row)?;
            vm.published_ports = vm_ports(conn, id)?;
            Ok(Some(vm))
        }
        None => Ok(None),
    }
}

/// Records a forward of VM `vm_id`, first refusing a host port some VM publishes already.
fn insert_port(conn: &Connection, vm_id: &str, port: &PublishedPort) -> Result<(), StoreError> {
    if let Some(vm) = port_owner(conn, port.host_port)? {
        return Err(StoreError::PortTaken {
            port: port.host_port,
            vm,
        });
    }
    conn.prepare_cached(
        "INSERT INTO vm_published_ports (vm_id, address, host_port, guest_port)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        vm_id,
        port.address,
        port.host_port,
        port.guest_port
    ])?;
    Ok(())
}

fn port_owner(conn: &Connection, host_port: u16) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT v.name FROM vm_published_ports p JOIN vms v ON v.id = p.vm_id
             WHERE p.host_port = ?1",
        )?
        .query_row([host_port], |row| row.get(0))
        .optional()?)
}

fn vm_ports(conn: &Connection, vm_id: &str) -> Result<Vec<PublishedPort>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT address, host_port, guest_port FROM vm_published_ports
         WHERE vm_id = ?1 ORDER BY host_port",
    )?;
    let mut rows = stmt.query([vm_id])?;
    let mut ports = Vec::new();
    while let Some(row) = rows.next()? {
        ports.push(decode_port(row, vm_id, 0)?);
    }
    Ok(ports)
}

/// Every VM's forwards, by VM id.
fn all_ports(
    conn: &Connection,
) -> Result<std::collections::HashMap<String, Vec<PublishedPort>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT vm_id, address, host_port, guest_port FROM vm_published_ports
         ORDER BY vm_id, host_port",
    )?;
    let mut rows = stmt.query([])?;
    let mut ports: std::collections::HashMap<String, Vec<PublishedPort>> = Default::default();
    while let Some(row) = rows.next()? {
        let vm_id: String = row.get(0)?;
        let port = decode_port(row, &vm_id, 1)?;
        ports.entry(vm_id).or_default().push(port);
    }
    Ok(ports)
}

/// A forward from columns `first..first + 3` (address, host_port, guest_port).
fn decode_port(
    row: &rusqlite::Row<'_>,
    vm_id: &str,
    first: usize,
) -> Result<PublishedPort, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "vm_published_ports",
        id: vm_id.to_owned(),
        detail,
    };
    let port = |index: usize, what: &str| -> Result<u16, StoreError> {
        let value: i64 = row.get(index)?;
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| corrupt(format!("{what} is {value}, not 1..=65535")))
    };
    Ok(PublishedPort {
        address: row.get(first)?,
        host_port: port(first + 1, "host_port")?,
        guest_port: port(first + 2, "guest_port")?,
    })
}

fn sorted_ports(mut ports: Vec<PublishedPort>) -> Vec<PublishedPort> {
    ports.sort_by_key(|p| p.host_port);
    ports
}

fn name_taken(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM vms WHERE name = ?1)")?
        .query_row([name], |row| row.get(0))?)
}

/// A random `adjective-noun` that no VM has; after [`NAME_ATTEMPTS`] collisions, one of them
/// with the lowest free numeric suffix (`brave-otter-2`).
/// The name a new VM gets: `wanted` when no VM has it, else a refusal; a generated one when
/// the caller left it to banger.
fn claim_name(
    conn: &Connection,
    wanted: Option<&str>,
    rng: &mut impl Rng,
) -> Result<String, StoreError> {
    match wanted {
        Some(name) if name_taken(conn, name)? => Err(StoreError::AlreadyExists {
            kind: "VM",
            name: name.to_owned(),
        }),
        Some(name) => Ok(name.to_owned()),
        None => generate_name(conn, rng),
    }
}

fn generate_name(conn: &Connection, rng: &mut impl Rng) -> Result<String, StoreError> {
    for _ in 0..NAME_ATTEMPTS {
        let name = random_name(rng);
        if !name_taken(conn, &name)? {
            return Ok(name);
        }
    }
    let base = random_name(rng);
    let mut suffix: u64 = 2;
    loop {
        let name = format!("{base}-{suffix}");
        if !name_taken(conn, &name)? {
            return Ok(name);
        }
        // Terminates: each taken suffix is a distinct row.
        suffix += 1;
    }
}

/// 16 lower-case hex characters no VM has.
fn fresh_id(conn: &Connection, rng: &mut impl Rng) -> Result<String, StoreError> {
    loop {
        let id = format!("{:016x}", rng.random::<u64>());
        if !id_taken(conn, &id)? {
            return Ok(id);
        }
    }
}

fn id_taken(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM vms WHERE id = ?1)")?
        .query_row([id], |row| row.get(0))?)
}

/// The lowest guest address of `pool` that no VM holds. VMs whose address lies outside the
/// pool (given under an earlier `subnet`) keep it and do not count.
fn lowest_free_ip(conn: &Connection, pool: &NetworkPool) -> Result<Ipv4Addr, StoreError> {
    let mut used = vec![false; pool.capacity() as usize];
    let mut stmt = conn.prepare_cached("SELECT id, ip FROM vms")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let r = RowReader::new(row, TABLE, 0)?;
        let ip: Ipv4Addr = r.parse(1, "ip")?;
        if let Some(index) = pool.guest_index(ip) {
            used[index as usize] = true;
        }
    }
    used.iter()
        .position(|taken| !taken)
        .and_then(|index| pool.guest_address(index as u32))
        .ok_or_else(|| StoreError::Exhausted {
            what: format!("guest IPs in {pool}"),
            hint: format!(
                "all {} addresses are taken; delete VMs you no longer need (`banger vm \
                 delete NAME`) or configure a larger `subnet` in config.toml",
                pool.capacity()
            ),
        })
}

/// The lowest vsock CID (>= 3) that no VM holds.
fn lowest_free_cid(conn: &Connection) -> Result<u32, StoreError> {
    // Walks the UNIQUE index in order and stops at the first gap.
    let mut stmt =
        conn.prepare_cached("SELECT vsock_cid FROM vms WHERE vsock_cid >= ?1 ORDER BY vsock_cid")?;
    let mut rows = stmt.query([FIRST_CID])?;
    let mut candidate = FIRST_CID;
    while let Some(row) = rows.next()? {
        let cid: i64 = row.get(0)?;
        if cid > candidate {
            break;
        }
        candidate = cid + 1;
    }
    if candidate > LAST_CID {
        return Err(StoreError::Exhausted {
            what: "vsock CIDs".into(),
            hint: "delete VMs you no longer need (`banger vm delete NAME`)".into(),
        });
    }
    // In range: FIRST_CID..=LAST_CID fits in u32.
    Ok(candidate as u32)
}

fn decode_vm(row: &rusqlite::Row<'_>) -> Result<Vm, StoreError> {
    let r = RowReader::new(row, TABLE, 0)?;
    let image_id: String = r.get(2, "image_id")?;
    let image_name: Option<String> = r.get(3, "image name")?;
    let Some(image_name) = image_name else {
        return Err(r.corrupt(format!("its image {image_id:?} does not exist")));
    };
    let ip: Ipv4Addr = r.parse(11, "ip")?;
    let gateway: Ipv4Addr = r.parse(12, "gateway")?;
    let runtime: Option<String> = r.get(18, "runtime")?;
    let prefix_len = r.u32(13, "prefix_len")?;
    let prefix_len = u8::try_from(prefix_len)
        .ok()
        .filter(|len| *len <= 32)
        .ok_or_else(|| r.corrupt(format!("prefix_len is {prefix_len}, not 0..=32")))?;
    Ok(Vm {
        id: r.id().to_owned(),
        name: r.get(1, "name")?,
        image: ImageRef {
            id: image_id,
            name: image_name,
        },
        vcpus: r.u32(4, "vcpus")?,
        memory_mib: r.u32(5, "memory_mib")?,
        disk_bytes: r.u64(6, "disk_bytes")?,
        work_disk_bytes: r.u64(7, "work_disk_bytes")?,
        nat: r.bool(8, "nat")?,
        vmm: r.parse(9, "vmm")?,
        state: r.parse(10, "state")?,
        network: VmNetwork {
            ip: ip.to_string(),
            gateway: gateway.to_string(),
            prefix_len,
            mac: r.get(14, "mac")?,
            vsock_cid: r.u32(15, "vsock_cid")?,
        },
        runtime: runtime
            .map(|json| {
                serde_json::from_str::<VmRuntime>(&json)
                    .map_err(|e| r.corrupt(format!("runtime is not a VM runtime document: {e}")))
            })
            .transpose()?,
        last_error: r.get(19, "last_error")?,
        work_seed: None,
        published_ports: Vec::new(),
        pool: r
            .get::<Option<String>>(20, "pool")?
            .map(|role| role.parse().map_err(|e: String| r.corrupt(e)))
            .transpose()?,
        created_at: Timestamp::from_millis(r.get(16, "created_at")?),
        updated_at: Timestamp::from_millis(r.get(17, "updated_at")?),
    })
}
