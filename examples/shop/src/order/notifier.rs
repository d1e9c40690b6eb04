//! Tells customers how their order ended: follows the `orders` log and puts an email on the
//! `emails` queue for every confirmation and cancellation.
//!
//! The email's message id is derived from the event's id, so a redelivered event (or a
//! republished one) yields the same email message, which the email service's inbox and
//! file naming turn into one email.

use switchboard::eventstore::Repository;
use switchboard::{
    Bus, Handled, HandlerError, Incoming, Message, Middleware, Outgoing, Router, RunningRouter,
};
use switchboard::{Start, SubscriptionName, SubscriptionSpec, TopicName};
use tower::Layer;

use super::aggregate::Order;
use super::read_model::order_id;
use super::store::ShopDatabase;
use crate::email::{EMAILS_TOPIC, Email};

/// Follows the `orders` log from its start (subscription `order-emails`).
///
/// # Errors
/// The bus refuses the subscription.
pub async fn start<DB: ShopDatabase>(
    bus: Bus,
    orders: Repository<Order, DB>,
) -> anyhow::Result<RunningRouter> {
    let log = TopicName::new(super::ORDERS_TOPIC)?;
    let emails = TopicName::new(EMAILS_TOPIC)?;
    bus.create_topic(&emails, 1).await?;
    let handler =
        tower::service_fn(move |incoming: Incoming| notify(orders.clone(), emails.clone(), incoming));
    let spec =
        SubscriptionSpec::stream(SubscriptionName::from_static("order-emails")).with_start(Start::Earliest);
    Ok(Router::new(bus)
        .route("order-emails", log, spec, Middleware::default().layer(handler))
        .start()
        .await?)
}

async fn notify<DB: ShopDatabase>(
    orders: Repository<Order, DB>,
    emails: TopicName,
    incoming: Incoming,
) -> Handled {
    let event = &incoming.message;
    let kind = match event.ty.as_str() {
        "order.confirmed" => "confirmed",
        "order.canceled" => "canceled",
        _ => return Ok(Vec::new()),
    };
    let Some(id) = event.subject.as_deref().and_then(order_id) else {
        return Err(HandlerError::permanent(format!("order event {} names no order", event.id)));
    };
    let order = orders.load(id).await.map_err(HandlerError::transient)?.state;
    let total = format!("{}.{:02} EUR", order.total_cents / 100, order.total_cents % 100);
    let lines: String = order.lines.iter().map(|l| format!("  {} × {}\n", l.quantity, l.sku)).collect();
    let (subject, body) = match kind {
        "confirmed" => (
            format!("Your order {id} is confirmed"),
            format!("Thank you! We have your payment of {total} and are packing:\n\n{lines}\nOrder {id}\n"),
        ),
        _ => (
            format!("Your order {id} was canceled"),
            format!(
                "Your order was canceled ({}). Nothing was charged, or the charge was refunded.\n\n{lines}\nOrder {id}\n",
                order.cancel_reason.as_deref().unwrap_or("no reason given")
            ),
        ),
    };
    let email = Email { to: order.customer, subject, body, order: id.to_owned(), kind: kind.to_owned() };
    let data = serde_json::to_vec(&email).map_err(HandlerError::permanent)?;
    let message = Message::new("/shop/order", "email.send", data)
        .with_id(format!("email-{}", event.id))
        .with_content_type("application/json");
    Ok(vec![Outgoing::new(emails, message)])
}
