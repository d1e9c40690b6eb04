//! The books of a shop, balanced: what `shop load` checks at the end of a run, and what
//! the end-to-end tests assert after killing services. Each service's database is read
//! directly (and the maildir), the orders from the order event store itself rather than a
//! projection, so a bug in a read model cannot hide a bug in checkout.
//!
//! Once every order is final, the books balance when:
//! - per product: on hand + reserved + sold = initial stock, nothing is still reserved,
//!   and sold = the quantities of the confirmed orders;
//! - payments: every confirmed order is charged its total and nothing else is charged, so
//!   charges − refunds = the totals of the confirmed orders;
//! - email: exactly one email per final order, of its outcome;
//! - shipping: one shipping request per confirmed order and none for another.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use switchboard::eventstore::{EventStore, EventStoreOptions, Position, decode_event};

use crate::catalog::Catalog;
use crate::deployment::AnyShopDatabase;
use crate::order::aggregate::{Line, OrderEvent};
use crate::order::read_model::order_id;

/// Where the books are: each service's database and the maildir.
pub struct Books<DB: sqlx::Database> {
    /// The order service's database (its event store).
    pub order: sqlx::Pool<DB>,
    /// Inventory's.
    pub inventory: sqlx::Pool<DB>,
    /// Payment's.
    pub payment: sqlx::Pool<DB>,
    /// Shipping's.
    pub shipping: sqlx::Pool<DB>,
    /// Where email writes.
    pub maildir: PathBuf,
    /// What was for sale, with its initial stock.
    pub catalog: Catalog,
}

/// What the books say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// Orders placed.
    pub orders: u64,
    /// Confirmed.
    pub confirmed: u64,
    /// Canceled.
    pub canceled: u64,
    /// Still in checkout.
    pub pending: u64,
    /// The totals of the confirmed orders, in cents.
    pub confirmed_cents: i64,
    /// Charges still standing (charges − refunds), in cents.
    pub charged_cents: i64,
    /// `.eml` files written.
    pub emails: u64,
    /// Shipping requests.
    pub shipments: u64,
    /// Every way the books do not balance; empty when they do.
    pub violations: Vec<String>,
}

impl Balance {
    /// Whether every order is final and the books balance.
    pub fn balanced(&self) -> bool {
        self.pending == 0 && self.violations.is_empty()
    }
}

#[derive(Default)]
struct OrderFacts {
    lines: Vec<Line>,
    total_cents: i64,
    status: &'static str,
}

impl<DB: AnyShopDatabase> Books<DB> {
    /// Checks the books once, as they are now.
    ///
    /// # Errors
    /// A database or the maildir cannot be read.
    pub async fn check(&self) -> anyhow::Result<Balance> {
        let orders = self.orders().await?;
        let mut balance = Balance { orders: orders.len() as u64, ..Balance::default() };
        let mut sold: BTreeMap<&str, i64> = BTreeMap::new();
        for order in orders.values() {
            match order.status {
                "confirmed" => {
                    balance.confirmed += 1;
                    balance.confirmed_cents += order.total_cents;
                    for line in &order.lines {
                        *sold.entry(line.sku.as_str()).or_default() += line.quantity;
                    }
                }
                "canceled" => balance.canceled += 1,
                _ => balance.pending += 1,
            }
        }
        let violations = &mut balance.violations;

        for stock in DB::all_stock(&self.inventory).await? {
            let initial = self.catalog.get(&stock.sku).map_or(0, |p| p.initial_stock);
            let confirmed = sold.get(stock.sku.as_str()).copied().unwrap_or(0);
            if stock.on_hand + stock.reserved + stock.sold != initial {
                violations.push(format!(
                    "{}: on hand {} + reserved {} + sold {} is not the initial {initial}",
                    stock.sku, stock.on_hand, stock.reserved, stock.sold
                ));
            }
            if balance.pending == 0 && stock.reserved != 0 {
                violations.push(format!(
                    "{}: {} units still reserved with no order in checkout",
                    stock.sku, stock.reserved
                ));
            }
            if balance.pending == 0 && stock.sold != confirmed {
                violations.push(format!(
                    "{}: {} sold, but confirmed orders hold {confirmed}",
                    stock.sku, stock.sold
                ));
            }
        }

        let payments: BTreeMap<String, _> = DB::all_payments(&self.payment).await?.into_iter().collect();
        for (id, payment) in &payments {
            if payment.state == "charged" {
                balance.charged_cents += payment.amount_cents;
                match orders.get(id.as_str()) {
                    Some(order)
                        if order.status == "confirmed" && order.total_cents != payment.amount_cents =>
                    {
                        violations.push(format!(
                            "{id}: charged {} for a total of {}",
                            payment.amount_cents, order.total_cents
                        ));
                    }
                    Some(order) if order.status == "canceled" => {
                        violations.push(format!("{id}: canceled but charged {}", payment.amount_cents));
                    }
                    None => violations.push(format!("{id}: charged {} for no order", payment.amount_cents)),
                    _ => {}
                }
            }
        }
        for (id, order) in &orders {
            let charged = payments.get(id.as_str()).is_some_and(|p| p.state == "charged");
            if order.status == "confirmed" && !charged {
                violations.push(format!("{id}: confirmed but not charged"));
            }
        }
        if balance.pending == 0 && balance.charged_cents != balance.confirmed_cents {
            violations.push(format!(
                "charges − refunds = {} cents, confirmed totals = {} cents",
                balance.charged_cents, balance.confirmed_cents
            ));
        }

        let emails = crate::email::sent(&self.maildir)?;
        balance.emails = emails.len() as u64;
        let mut told: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        for (name, text) in &emails {
            match email_outcome(text) {
                Some((id, kind)) => *told.entry((id, kind)).or_default() += 1,
                None => violations.push(format!("email {name} is about no order outcome")),
            }
        }
        for (id, order) in &orders {
            if order.status == "pending" {
                continue;
            }
            let count = told.remove(&(id.clone(), order.status)).unwrap_or(0);
            if count != 1 {
                violations.push(format!("{id}: {count} emails about being {}", order.status));
            }
        }
        for ((id, kind), count) in told {
            violations.push(format!("{id}: {count} emails saying {kind}, which it is not"));
        }

        let shipped: BTreeSet<String> = DB::shipping_requests(&self.shipping).await.into_iter().collect();
        balance.shipments = shipped.len() as u64;
        for (id, order) in &orders {
            let ships = shipped.contains(id.as_str());
            match order.status {
                "confirmed" if !ships => violations.push(format!("{id}: confirmed but no shipping request")),
                "confirmed" => {}
                status if ships => violations.push(format!("{id}: {status} but has a shipping request")),
                _ => {}
            }
        }
        for id in &shipped {
            if !orders.contains_key(id.as_str()) {
                violations.push(format!("{id}: a shipping request for no order"));
            }
        }
        Ok(balance)
    }

    /// Checks until every order is final and the books balance, or `within` passes (the
    /// services catch up asynchronously); the last check either way.
    ///
    /// # Errors
    /// A database or the maildir cannot be read.
    pub async fn settle(&self, within: Duration) -> anyhow::Result<Balance> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let balance = self.check().await?;
            if balance.balanced() || tokio::time::Instant::now() >= deadline {
                return Ok(balance);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every order, folded from the order event store's feed.
    async fn orders(&self) -> anyhow::Result<BTreeMap<String, OrderFacts>> {
        let store = EventStore::open(self.order.clone(), EventStoreOptions::default()).await?;
        let mut orders: BTreeMap<String, OrderFacts> = BTreeMap::new();
        let mut after = Position(0);
        loop {
            let page = store.read_all(after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.position.unwrap_or(after);
            for event in &page {
                let Some(id) = order_id(event.stream.as_str()) else { continue };
                if event.is_tombstone() {
                    continue;
                }
                let order = orders.entry(id.to_owned()).or_default();
                match decode_event::<OrderEvent>(event)? {
                    OrderEvent::Created { lines, total_cents, .. } => {
                        *order = OrderFacts { lines, total_cents, status: "pending" };
                    }
                    OrderEvent::Edited { lines, total_cents } => {
                        order.lines = lines;
                        order.total_cents = total_cents;
                    }
                    OrderEvent::Confirmed => order.status = "confirmed",
                    OrderEvent::Canceled { .. } => order.status = "canceled",
                }
            }
        }
        Ok(orders)
    }
}

/// The order and outcome an email tells, from its subject line.
fn email_outcome(text: &str) -> Option<(String, &'static str)> {
    let subject = text.lines().find_map(|l| l.strip_prefix("Subject: "))?.trim();
    let rest = subject.strip_prefix("Your order ")?;
    if let Some(id) = rest.strip_suffix(" is confirmed") {
        Some((id.to_owned(), "confirmed"))
    } else {
        rest.strip_suffix(" was canceled").map(|id| (id.to_owned(), "canceled"))
    }
}
