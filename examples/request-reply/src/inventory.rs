//! The inventory service: stock per SKU, reserved by gRPC calls.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use switchboard_sync::IncomingContextLayer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::proto::{Inventory, InventoryServer, ReserveReply, ReserveRequest};

/// Stock per SKU, in memory.
#[derive(Debug, Default)]
pub struct InventoryService {
    stock: Mutex<HashMap<String, u32>>,
    next_reservation: AtomicU64,
}

impl InventoryService {
    /// An inventory holding `stock` (SKU, units).
    pub fn new<S: Into<String>>(stock: impl IntoIterator<Item = (S, u32)>) -> InventoryService {
        InventoryService {
            stock: Mutex::new(stock.into_iter().map(|(sku, n)| (sku.into(), n)).collect()),
            next_reservation: AtomicU64::new(1),
        }
    }

    /// Takes the request's units out of stock.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown SKU, `FAILED_PRECONDITION` when stock is short,
    /// `INVALID_ARGUMENT` for a zero quantity.
    pub fn take(&self, request: &ReserveRequest) -> Result<ReserveReply, Status> {
        if request.quantity == 0 {
            return Err(Status::invalid_argument("quantity must be at least 1"));
        }
        let mut stock = self.stock.lock();
        let units = stock
            .get_mut(&request.sku)
            .ok_or_else(|| Status::not_found(format!("unknown SKU {:?}", request.sku)))?;
        if *units < request.quantity {
            return Err(Status::failed_precondition(format!(
                "only {units} unit(s) of {:?} left, {} requested",
                request.sku, request.quantity
            )));
        }
        *units -= request.quantity;
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        Ok(ReserveReply { reservation_id: format!("r-{id}"), remaining: *units })
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(&self, request: Request<ReserveRequest>) -> Result<Response<ReserveReply>, Status> {
        let request = request.into_inner();
        let reply = self.take(&request)?;
        tracing::info!(sku = %request.sku, quantity = request.quantity, remaining = reply.remaining, "Reserved.");
        Ok(Response::new(reply))
    }
}

/// Serves `service` on `listener` until `shutdown` completes, behind
/// [`IncomingContextLayer`]: handlers run in the caller's trace and deadline (tonic itself
/// cancels a handler whose `grpc-timeout` passes).
///
/// # Errors
/// The server failed.
pub async fn serve(
    listener: TcpListener,
    service: impl Inventory,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .layer(IncomingContextLayer::new())
        .add_service(InventoryServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
