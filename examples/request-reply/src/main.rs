//! `request-reply`: runs one of the example's two services.
//!
//! ```text
//! request-reply inventory --listen 127.0.0.1:50051
//! request-reply order --listen 127.0.0.1:8080 --inventory http://127.0.0.1:50051
//! curl -X POST localhost:8080/orders -H 'content-type: application/json' \
//!      -H 'x-request-timeout-ms: 1000' -d '{"sku":"apple","quantity":2}'
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use example_request_reply::inventory::{InventoryService, serve};
use example_request_reply::order::OrderService;
use example_request_reply::order_api::router;
use switchboard::layers::CircuitBreakerConfig;
use switchboard_sync::CallPolicy;

#[derive(Parser)]
#[command(about = "The request-reply example's services")]
struct Cli {
    #[command(subcommand)]
    service: Service,
}

#[derive(Subcommand)]
enum Service {
    /// The gRPC inventory, stocked with a few SKUs.
    Inventory {
        /// Address to serve gRPC on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
    },
    /// The HTTP order service, calling the inventory.
    Order {
        /// Address to serve HTTP on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The inventory's gRPC URI.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        inventory: String,
        /// Time limit of one inventory call, in milliseconds.
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match Cli::parse().service {
        Service::Inventory { listen } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("inventory serving gRPC on {}", listener.local_addr()?);
            let stock = InventoryService::new([("apple", 100), ("pear", 20), ("plum", 0)]);
            serve(listener, stock, shutdown).await?;
        }
        Service::Order { listen, inventory, timeout_ms } => {
            let policy = CallPolicy::default()
                .with_timeout(Duration::from_millis(timeout_ms))
                .with_breaker(CircuitBreakerConfig::default());
            let orders = Arc::new(OrderService::new(&inventory, policy)?);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!("order serving HTTP on {}, inventory at {inventory}", listener.local_addr()?);
            axum::serve(listener, router(orders)).with_graceful_shutdown(shutdown).await?;
        }
    }
    Ok(())
}
