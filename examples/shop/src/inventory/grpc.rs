//! The inventory gRPC service (`shop.inventory.v1.Inventory`) and the order service's
//! client of it.

use std::time::Duration;

use switchboard_policy::BreakerConfig;
use switchboard_sync::{CallPolicy, Operation};
use tonic::{Request, Response, Status};

use super::InventoryDatabase;

/// The generated protobuf types, server and client.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("shop.inventory.v1");
}

use proto::inventory_server::{Inventory, InventoryServer};
use proto::{CheckStockRequest, CheckStockResponse, Shortage};

/// The most items one check takes.
const MAX_ITEMS: usize = 100;

struct Service<DB: InventoryDatabase> {
    pool: sqlx::Pool<DB>,
}

#[tonic::async_trait]
impl<DB: InventoryDatabase> Inventory for Service<DB> {
    async fn check_stock(
        &self,
        request: Request<CheckStockRequest>,
    ) -> Result<Response<CheckStockResponse>, Status> {
        let items = request.into_inner().items;
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(Status::invalid_argument(format!("a check takes 1 to {MAX_ITEMS} items")));
        }
        let mut shortages = Vec::new();
        for item in items {
            if item.quantity <= 0 {
                return Err(Status::invalid_argument(format!(
                    "quantity {} of {:?} is not positive",
                    item.quantity, item.sku
                )));
            }
            let on_hand = DB::stock(&self.pool, &item.sku)
                .await
                .map_err(|e| Status::unavailable(format!("the stock cannot be read: {e}")))?
                .map_or(0, |s| s.on_hand);
            if on_hand < item.quantity {
                shortages.push(Shortage { sku: item.sku, requested: item.quantity, on_hand });
            }
        }
        Ok(Response::new(CheckStockResponse { available: shortages.is_empty(), shortages }))
    }
}

/// Serves the inventory gRPC service on `listener` until the task is dropped.
pub fn serve<DB: InventoryDatabase>(
    pool: sqlx::Pool<DB>,
    listener: tokio::net::TcpListener,
) -> tokio::task::JoinHandle<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            // The caller's trace and deadline; a server span per call.
            .layer(switchboard_sync::IncomingContextLayer::new())
            .add_service(InventoryServer::new(Service { pool }))
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "The inventory gRPC server stopped.");
        }
    })
}

/// The order service's client: one policy (timeout, retries within a budget, breaker) for
/// every check.
#[derive(Clone)]
pub struct StockCheck {
    client: proto::inventory_client::InventoryClient<switchboard_sync::GrpcChannel>,
    policy: CallPolicy,
}

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Everything is in stock now.
    InStock,
    /// These are not: (sku, requested, on hand).
    Short(Vec<(String, i64, i64)>),
}

impl StockCheck {
    /// A client of the inventory service at `url` (`http://host:port`).
    ///
    /// # Errors
    /// The URL is not valid.
    pub fn new(url: &str) -> anyhow::Result<StockCheck> {
        let policy = CallPolicy::default()
            .with_timeout(Duration::from_millis(500))
            .with_breaker(BreakerConfig::default());
        let channel = switchboard_sync::grpc_channel(url, &policy)?;
        Ok(StockCheck { client: proto::inventory_client::InventoryClient::new(channel), policy })
    }

    /// Whether `items` (sku, quantity) are in stock.
    ///
    /// # Errors
    /// The inventory service did not answer under the policy (the caller decides whether to
    /// go on without the check).
    pub async fn check(&self, items: &[(String, i64)]) -> anyhow::Result<Availability> {
        let request = CheckStockRequest {
            items: items
                .iter()
                .map(|(sku, quantity)| proto::Item { sku: sku.clone(), quantity: *quantity })
                .collect(),
        };
        let answer = self
            .policy
            .call(Operation::grpc("shop.inventory.v1.Inventory", "CheckStock"), |_| {
                let mut client = self.client.clone();
                let request = request.clone();
                async move { client.check_stock(request).await }
            })
            .await?
            .into_inner();
        Ok(if answer.available {
            Availability::InStock
        } else {
            Availability::Short(
                answer.shortages.into_iter().map(|s| (s.sku, s.requested, s.on_hand)).collect(),
            )
        })
    }
}
