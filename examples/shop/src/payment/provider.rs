//! The simulated payment provider: a small HTTP service of the shop standing in for a card
//! processor, with a configurable decline rate, latency and outages.
//!
//! `PUT /charges/{key}` charges once per key (a repeat answers the same), `PUT
//! /refunds/{key}` refunds a charge. Customers whose address starts with `decline` are
//! always declined, so tests and demos can ask for a decline.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use serde::{Deserialize, Serialize};

/// How the simulated provider behaves.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// The share of charges declined, 0 to 1 (decided by the charge's key, so a repeat
    /// gets the same answer).
    pub decline_rate: f64,
    /// How long each answer takes.
    pub latency: Duration,
    /// While set, every request gets `503`.
    pub down: Arc<AtomicBool>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig { decline_rate: 0.0, latency: Duration::ZERO, down: Arc::new(AtomicBool::new(false)) }
    }
}

/// A charge request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// How much, in cents.
    pub amount_cents: i64,
    /// Who pays.
    pub customer: String,
}

/// The provider's answer to a charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeAnswer {
    /// `captured` or `declined`.
    pub status: String,
    /// The charge's id (captured only).
    pub charge_id: Option<String>,
    /// Why it was declined.
    pub reason: Option<String>,
}

#[derive(Default)]
struct Ledger {
    charges: HashMap<String, (ChargeAnswer, i64)>,
    refunds: HashMap<String, i64>,
}

struct Provider {
    config: ProviderConfig,
    ledger: parking_lot::Mutex<Ledger>,
}

/// The name the payment service's calls give the provider (`peer.service`): it stands for a
/// third party, which exports no spans, so the service graph draws it from the caller's side.
pub const PEER_SERVICE: &str = "payment-provider";

/// The provider's routes.
pub fn router(config: ProviderConfig) -> axum::Router {
    let provider = Arc::new(Provider { config, ledger: parking_lot::Mutex::new(Ledger::default()) });
    axum::Router::new()
        .route("/charges/{key}", put(charge))
        .route("/refunds/{key}", put(refund))
        .with_state(provider)
}

async fn charge(
    State(provider): State<Arc<Provider>>,
    Path(key): Path<String>,
    axum::Json(request): axum::Json<ChargeRequest>,
) -> Result<(StatusCode, axum::Json<ChargeAnswer>), StatusCode> {
    provider.pause().await?;
    let mut ledger = provider.ledger.lock();
    if let Some((answer, _)) = ledger.charges.get(&key) {
        return Ok((status_of(answer), axum::Json(answer.clone())));
    }
    let draw = (switchboard_core::fnv1a_64(key.as_bytes()) % 10_000) as f64 / 10_000.0;
    let answer = if request.customer.starts_with("decline") || draw < provider.config.decline_rate {
        ChargeAnswer { status: "declined".into(), charge_id: None, reason: Some("card declined".into()) }
    } else if request.amount_cents <= 0 {
        ChargeAnswer { status: "declined".into(), charge_id: None, reason: Some("nothing to charge".into()) }
    } else {
        ChargeAnswer { status: "captured".into(), charge_id: Some(format!("ch_{key}")), reason: None }
    };
    ledger.charges.insert(key, (answer.clone(), request.amount_cents));
    Ok((status_of(&answer), axum::Json(answer)))
}

async fn refund(
    State(provider): State<Arc<Provider>>,
    Path(key): Path<String>,
) -> Result<StatusCode, StatusCode> {
    provider.pause().await?;
    let mut ledger = provider.ledger.lock();
    let Some((ChargeAnswer { charge_id: Some(_), .. }, amount)) = ledger.charges.get(&key).cloned() else {
        return Err(StatusCode::NOT_FOUND);
    };
    ledger.refunds.insert(key, amount);
    Ok(StatusCode::OK)
}

fn status_of(answer: &ChargeAnswer) -> StatusCode {
    if answer.status == "captured" { StatusCode::CREATED } else { StatusCode::PAYMENT_REQUIRED }
}

impl Provider {
    async fn pause(&self) -> Result<(), StatusCode> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        if self.config.down.load(Ordering::SeqCst) { Err(StatusCode::SERVICE_UNAVAILABLE) } else { Ok(()) }
    }
}
