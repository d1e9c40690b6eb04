//! The inventory contract, generated from `proto/inventory/v1/inventory.proto` by `build.rs`.

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic, clippy::unwrap_used)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/inventory_proto.rs"));
}

pub use generated::inventory::v1::inventory_client::InventoryClient;
pub use generated::inventory::v1::inventory_server::{Inventory, InventoryServer};
pub use generated::inventory::v1::{ReserveReply, ReserveRequest};

/// The gRPC service name, for spans and errors.
pub const INVENTORY_SERVICE: &str = "inventory.v1.Inventory";
