//! The read model's GraphQL types: an order with its lines, and what payment, shipping and
//! email said about it, each resolved from its projection when a query asks for it.

use async_graphql::{ComplexObject, Context, Enum, ID, Result, SimpleObject};

use super::ReadModel;
use crate::order::aggregate::{self, Line};
use crate::order::store::OrderRow;

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum OrderStatus {
    /// Checkout is running.
    Pending,
    /// Stock reserved and payment captured.
    Confirmed,
    /// Canceled by the customer or by a failed checkout.
    Canceled,
}

impl OrderStatus {
    /// The aggregate's status of this name (the read model's columns hold those names).
    fn of(self) -> aggregate::OrderStatus {
        match self {
            OrderStatus::Pending => aggregate::OrderStatus::Pending,
            OrderStatus::Confirmed => aggregate::OrderStatus::Confirmed,
            OrderStatus::Canceled => aggregate::OrderStatus::Canceled,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        self.of().as_str()
    }

    fn parse(name: &str) -> Result<OrderStatus> {
        match aggregate::OrderStatus::parse(name) {
            Some(aggregate::OrderStatus::Pending) => Ok(OrderStatus::Pending),
            Some(aggregate::OrderStatus::Confirmed) => Ok(OrderStatus::Confirmed),
            Some(aggregate::OrderStatus::Canceled) => Ok(OrderStatus::Canceled),
            _ => Err(format!("an order with status {name:?}").into()),
        }
    }
}

/// An order as the read model has it.
#[derive(Clone, Debug, SimpleObject)]
#[graphql(complex)]
pub struct Order {
    /// Its id.
    pub id: ID,
    /// Where it is.
    pub status: OrderStatus,
    /// The customer's email address.
    pub customer: String,
    /// What was ordered, priced when placed.
    pub lines: Vec<OrderLine>,
    /// The sum of the lines, in cents.
    pub total_cents: i64,
    /// Why it was canceled.
    pub cancel_reason: Option<String>,
    /// How many changes the order went through (its stream version).
    pub version: i64,
    /// When it was placed (ms since the epoch).
    pub created_at: i64,
    /// When it last changed (ms since the epoch).
    pub updated_at: i64,
}

/// One product in an order.
#[derive(Clone, Debug, SimpleObject)]
pub struct OrderLine {
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// The unit price when placed, in cents.
    pub unit_price_cents: i64,
}

/// The order's payment, as payment told it.
#[derive(Clone, Debug, SimpleObject)]
pub struct Payment {
    /// `charged`, `declined` or `refunded`.
    pub state: String,
    /// The amount, in cents.
    pub amount_cents: i64,
    /// The provider's charge id.
    pub charge_id: Option<String>,
    /// When it last changed (ms).
    pub updated_at: i64,
}

/// The order's shipment, as shipping told it.
#[derive(Clone, Debug, SimpleObject)]
pub struct Shipment {
    /// `requested` or `canceled`.
    pub state: String,
    /// When shipping was asked for it (ms).
    pub requested_at: Option<i64>,
    /// When it last changed (ms).
    pub updated_at: i64,
}

/// An email written to the customer about the order.
#[derive(Clone, Debug, SimpleObject)]
pub struct Email {
    /// Its RFC 5322 message id (without the angle brackets and domain).
    pub message_id: String,
    /// `confirmed` or `canceled`.
    pub kind: String,
    /// The recipient.
    pub to: String,
    /// The subject line.
    pub subject: String,
    /// When it was written (ms).
    pub sent_at: i64,
}

#[ComplexObject]
impl Order {
    /// The payment, once payment answered.
    async fn payment(&self, ctx: &Context<'_>) -> Result<Option<Payment>> {
        let row = ctx.data::<ReadModel>()?.payment(&self.id).await?;
        Ok(row.map(|p| Payment {
            state: p.state,
            amount_cents: p.amount_cents,
            charge_id: p.charge_id,
            updated_at: p.updated_at,
        }))
    }

    /// The shipment, once shipping asked for one.
    async fn shipment(&self, ctx: &Context<'_>) -> Result<Option<Shipment>> {
        let row = ctx.data::<ReadModel>()?.shipment(&self.id).await?;
        Ok(row.map(|s| Shipment { state: s.state, requested_at: s.requested_at, updated_at: s.updated_at }))
    }

    /// The emails written about it, oldest first.
    async fn emails(&self, ctx: &Context<'_>) -> Result<Vec<Email>> {
        let rows = ctx.data::<ReadModel>()?.emails(&self.id).await?;
        Ok(rows
            .into_iter()
            .map(|e| Email {
                message_id: e.message_id,
                kind: e.kind,
                to: e.recipient,
                subject: e.subject,
                sent_at: e.sent_at,
            })
            .collect())
    }
}

impl Order {
    pub(super) fn from_row(row: OrderRow) -> Result<Order> {
        let lines: Vec<Line> = serde_json::from_str(&row.lines)?;
        Ok(Order {
            id: ID(row.id),
            status: OrderStatus::parse(&row.status)?,
            customer: row.customer,
            lines: lines
                .into_iter()
                .map(|l| OrderLine { sku: l.sku, quantity: l.quantity, unit_price_cents: l.unit_price_cents })
                .collect(),
            total_cents: row.total_cents,
            cancel_reason: row.cancel_reason,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// One page of orders.
#[derive(Clone, Debug, SimpleObject)]
pub struct OrderConnection {
    /// The orders, oldest first.
    pub nodes: Vec<Order>,
    /// Where the page ends.
    pub page_info: PageInfo,
}

/// Where a page ends.
#[derive(Clone, Debug, SimpleObject)]
pub struct PageInfo {
    /// Whether there may be more after it.
    pub has_next_page: bool,
    /// The cursor to pass as `after` for the next page.
    pub end_cursor: Option<String>,
}
