//! The order aggregate: its states, the events that move it, and the rules for commands.

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;

/// The most lines one order has.
pub const MAX_LINES: usize = 50;
/// The most units of one product in one line.
pub const MAX_QUANTITY: i64 = 100;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Not placed (no events).
    #[default]
    None,
    /// Placed; checkout (stock, payment) in progress.
    Pending,
    /// Stock reserved and payment captured.
    Confirmed,
    /// Canceled by the customer or by a failed checkout.
    Canceled,
}

impl OrderStatus {
    /// The name used in the API and the read model.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::None => "none",
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Canceled => "canceled",
        }
    }

    /// The status [`as_str`](OrderStatus::as_str) named, if it is one.
    pub fn parse(name: &str) -> Option<OrderStatus> {
        match name {
            "none" => Some(OrderStatus::None),
            "pending" => Some(OrderStatus::Pending),
            "confirmed" => Some(OrderStatus::Confirmed),
            "canceled" => Some(OrderStatus::Canceled),
            _ => None,
        }
    }
}

/// One product in an order, priced when it was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    /// The product.
    pub sku: String,
    /// Units, 1 to 100.
    pub quantity: i64,
    /// The unit price when the line was added, in cents.
    pub unit_price_cents: i64,
}

/// What a customer asks for: a product and a quantity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestedLine {
    /// The product's sku.
    pub sku: String,
    /// Units, 1 to 100.
    pub quantity: i64,
}

/// An order's state, rebuilt from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Where it is.
    pub status: OrderStatus,
    /// The customer's email address.
    pub customer: String,
    /// What was ordered.
    pub lines: Vec<Line>,
    /// The sum of the lines, in cents.
    pub total_cents: i64,
    /// Why it was canceled.
    pub cancel_reason: Option<String>,
}

/// What happened to an order: the events on the `orders` log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order was placed.
    #[serde(rename = "order.created")]
    Created {
        /// The customer's email address.
        customer: String,
        /// The priced lines.
        lines: Vec<Line>,
        /// Their sum.
        total_cents: i64,
    },
    /// Its lines were replaced before checkout finished.
    #[serde(rename = "order.edited")]
    Edited {
        /// The new priced lines.
        lines: Vec<Line>,
        /// Their sum.
        total_cents: i64,
    },
    /// Checkout succeeded.
    #[serde(rename = "order.confirmed")]
    Confirmed,
    /// The order was canceled.
    #[serde(rename = "order.canceled")]
    Canceled {
        /// Why.
        reason: String,
    },
}

/// What is asked of an order.
#[derive(Clone, Debug)]
pub enum OrderCommand {
    /// Place it, pricing the lines from the catalog.
    Place {
        /// The customer's email address.
        customer: String,
        /// What they want.
        lines: Vec<RequestedLine>,
        /// The catalog to price from.
        catalog: Catalog,
    },
    /// Replace its lines (only while checkout has not finished).
    Edit {
        /// The new lines.
        lines: Vec<RequestedLine>,
        /// The catalog to price from.
        catalog: Catalog,
    },
    /// Checkout succeeded for these lines: refused when the order was edited meanwhile,
    /// since what was reserved and charged is not what it now says.
    Confirm {
        /// The lines checkout reserved stock for and charged.
        lines: Vec<Line>,
    },
    /// Cancel it.
    Cancel {
        /// Why.
        reason: String,
    },
}

/// Why an order command is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderRejected {
    /// The request itself is wrong (the message says how).
    #[error("{0}")]
    Invalid(String),
    /// A line names a product the catalog does not have.
    #[error("unknown product {0:?}")]
    UnknownProduct(String),
    /// The order was already placed.
    #[error("the order already exists")]
    AlreadyPlaced,
    /// There is no such order.
    #[error("no such order")]
    NotFound,
    /// The order is confirmed or canceled and cannot change.
    #[error("the order is {0} and can no longer change")]
    Final(&'static str),
    /// Checkout ran for lines the order no longer has (it was edited meanwhile).
    #[error("the order was edited during checkout")]
    EditedDuringCheckout,
}

impl switchboard::eventstore::Aggregate for Order {
    const KIND: &'static str = "order";
    type Event = OrderEvent;
    type Command = OrderCommand;
    type Error = OrderRejected;

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Created { customer, lines, total_cents } => {
                self.status = OrderStatus::Pending;
                self.customer.clone_from(customer);
                self.lines.clone_from(lines);
                self.total_cents = *total_cents;
            }
            OrderEvent::Edited { lines, total_cents } => {
                self.lines.clone_from(lines);
                self.total_cents = *total_cents;
            }
            OrderEvent::Confirmed => self.status = OrderStatus::Confirmed,
            OrderEvent::Canceled { reason } => {
                self.status = OrderStatus::Canceled;
                self.cancel_reason = Some(reason.clone());
            }
        }
    }

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderRejected> {
        match command {
            OrderCommand::Place { customer, lines, catalog } => {
                if self.status != OrderStatus::None {
                    return Err(OrderRejected::AlreadyPlaced);
                }
                check_customer(customer)?;
                let (lines, total_cents) = price(lines, catalog)?;
                Ok(vec![OrderEvent::Created { customer: customer.clone(), lines, total_cents }])
            }
            OrderCommand::Edit { lines, catalog } => {
                self.must_be_open()?;
                let (lines, total_cents) = price(lines, catalog)?;
                if lines == self.lines {
                    return Ok(Vec::new());
                }
                Ok(vec![OrderEvent::Edited { lines, total_cents }])
            }
            // Confirming again is the same as once: a checkout that confirmed and died before
            // recording it confirms again on restart, and must not be told it failed (that
            // would refund a confirmed order).
            OrderCommand::Confirm { lines }
                if self.status == OrderStatus::Confirmed && *lines == self.lines =>
            {
                Ok(Vec::new())
            }
            OrderCommand::Confirm { lines } => {
                self.must_be_open()?;
                if *lines != self.lines {
                    return Err(OrderRejected::EditedDuringCheckout);
                }
                Ok(vec![OrderEvent::Confirmed])
            }
            OrderCommand::Cancel { reason } => match self.status {
                OrderStatus::None => Err(OrderRejected::NotFound),
                // Canceling twice is the same as once: the second changes nothing.
                OrderStatus::Canceled => Ok(Vec::new()),
                OrderStatus::Confirmed => Err(OrderRejected::Final("confirmed")),
                OrderStatus::Pending => {
                    if reason.trim().is_empty() || reason.len() > 500 {
                        return Err(OrderRejected::Invalid(
                            "a cancellation reason is 1 to 500 characters".into(),
                        ));
                    }
                    Ok(vec![OrderEvent::Canceled { reason: reason.clone() }])
                }
            },
        }
    }
}

impl Order {
    fn must_be_open(&self) -> Result<(), OrderRejected> {
        match self.status {
            OrderStatus::None => Err(OrderRejected::NotFound),
            OrderStatus::Pending => Ok(()),
            other => Err(OrderRejected::Final(other.as_str())),
        }
    }
}

/// An email address good enough to send to: one `@`, something on both sides, a dot in the
/// domain, no spaces, at most 254 bytes.
fn check_customer(customer: &str) -> Result<(), OrderRejected> {
    let valid = customer.len() <= 254
        && !customer.chars().any(|c| c.is_whitespace() || c.is_control())
        && customer.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if valid {
        Ok(())
    } else {
        Err(OrderRejected::Invalid(format!("customer {customer:?} is not an email address")))
    }
}

/// Prices the requested lines, merging repeated skus; refuses empty orders, bad
/// quantities and unknown products.
fn price(requested: &[RequestedLine], catalog: &Catalog) -> Result<(Vec<Line>, i64), OrderRejected> {
    if requested.is_empty() {
        return Err(OrderRejected::Invalid("an order needs at least one line".into()));
    }
    if requested.len() > MAX_LINES {
        return Err(OrderRejected::Invalid(format!("an order has at most {MAX_LINES} lines")));
    }
    let mut lines: Vec<Line> = Vec::new();
    for line in requested {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(OrderRejected::Invalid(format!(
                "quantity {} of {:?}: it must be 1 to {MAX_QUANTITY}",
                line.quantity, line.sku
            )));
        }
        let product =
            catalog.get(&line.sku).ok_or_else(|| OrderRejected::UnknownProduct(line.sku.clone()))?;
        match lines.iter_mut().find(|l| l.sku == line.sku) {
            Some(existing) if existing.quantity + line.quantity > MAX_QUANTITY => {
                return Err(OrderRejected::Invalid(format!(
                    "{:?} adds up to more than {MAX_QUANTITY} units",
                    line.sku
                )));
            }
            Some(existing) => existing.quantity += line.quantity,
            None => lines.push(Line {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price_cents: product.price_cents,
            }),
        }
    }
    let total = lines.iter().map(|l| l.quantity * l.unit_price_cents).sum();
    Ok((lines, total))
}
