//! banger's durable state: one SQLite database (`banger.db`, WAL) holding the images and VMs
//! the daemon knows about. This crate owns the schema and its append-only migrations, decodes
//! rows into `banger_api` wire types (reporting rows it cannot decode instead of panicking),
//! and allocates the unique per-VM values (name, guest IP, MAC, vsock CID) inside one
//! `BEGIN IMMEDIATE` transaction so that concurrent daemons' requests never hand out the same
//! value twice.
//!
//! It never spawns processes and never touches anything but its database file.

mod error;
mod image;
mod names;
mod network;
mod schema;
mod snapshot;
mod store;
mod vm;

pub use error::StoreError;
pub use image::Replaced;
pub use network::{NetworkPool, mac_for_ip};
pub use schema::{MIGRATIONS, SCHEMA_VERSION};
pub use store::Store;
pub use vm::{Admit, Demand, NewVm, PoolSpec, Reserved, VmResources};
