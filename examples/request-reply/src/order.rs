//! The order service's core: reserving an order's stock from the inventory, through a gRPC
//! channel and a [`CallPolicy`].

use serde::{Deserialize, Serialize};
use switchboard_sync::{CallError, CallPolicy, GrpcChannel, Operation, grpc_channel};

use crate::proto::{INVENTORY_SERVICE, InventoryClient, ReserveRequest};

/// An order to place.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct OrderRequest {
    /// What is ordered.
    pub sku: String,
    /// How many units.
    pub quantity: u32,
}

/// A placed order.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Order {
    /// The inventory's reservation.
    pub reservation_id: String,
    /// Units of the SKU left after this order.
    pub remaining: u32,
}

/// Why an order could not be placed: the inventory call's error.
pub type OrderError = CallError<tonic::Status>;

/// Places orders by reserving their stock in the inventory.
#[derive(Clone, Debug)]
pub struct OrderService {
    inventory: InventoryClient<GrpcChannel>,
    policy: CallPolicy,
}

impl OrderService {
    /// An order service calling the inventory at `inventory_uri` (`http://host:port`) under
    /// `policy`; connects on the first call.
    ///
    /// # Errors
    /// `inventory_uri` is not a valid URI.
    pub fn new(inventory_uri: &str, policy: CallPolicy) -> Result<OrderService, tonic::transport::Error> {
        let channel = grpc_channel(inventory_uri, &policy)?;
        Ok(OrderService { inventory: InventoryClient::new(channel), policy })
    }

    /// The policy of the inventory calls.
    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    /// Reserves the order's stock. `Reserve` is not idempotent, so it is retried on
    /// `UNAVAILABLE` only (a reservation refused as unavailable was not made, so trying
    /// again cannot reserve twice), never after a timeout (one whose answer was lost may
    /// have been made).
    ///
    /// # Errors
    /// The inventory refused the order (`NOT_FOUND`, `FAILED_PRECONDITION`…), or could not be
    /// reached in time ([`CallError`]'s other variants).
    pub async fn place(&self, order: &OrderRequest) -> Result<Order, OrderError> {
        let reply = self
            .policy
            .call(Operation::grpc(INVENTORY_SERVICE, "Reserve"), |_attempt_timeout| {
                // The channel sends the attempt's deadline and span along by itself.
                let mut inventory = self.inventory.clone();
                let request = ReserveRequest { sku: order.sku.clone(), quantity: order.quantity };
                async move { inventory.reserve(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(Order { reservation_id: reply.reservation_id, remaining: reply.remaining })
    }
}
