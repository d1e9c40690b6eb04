//! Broker errors in the contract's terms.

use switchboard_broker::BrokerError;
use switchboard_core::contract::{BusError, LeaseLostCause, Resource};

pub(crate) const BACKEND: &str = "embedded";

/// Maps a broker error onto the contract's error, keeping the broker's message.
pub(crate) fn to_bus(e: BrokerError) -> BusError {
    let text = e.to_string();
    match e {
        BrokerError::InvalidName(n) => BusError::InvalidName(n),
        BrokerError::InvalidMessage(m) => BusError::InvalidMessage(m),
        BrokerError::InvalidConfig(s) | BrokerError::InvalidArgument(s) => BusError::InvalidArgument(s),
        BrokerError::BatchTooLarge { .. }
        | BrokerError::OffsetOutOfRange { .. }
        | BrokerError::PartitionNotFound { .. } => BusError::InvalidArgument(text),
        BrokerError::TopicNotFound(topic) => BusError::topic_not_found(&topic),
        BrokerError::SubscriptionNotFound { topic, subscription } => {
            BusError::subscription_not_found(&topic, &subscription)
        }
        BrokerError::TopicExists(topic) => {
            BusError::Conflict { resource: Resource::Topic(topic), reason: text }
        }
        BrokerError::SubscriptionExists { topic, subscription } => {
            BusError::subscription_conflict(&topic, &subscription, text)
        }
        // The broker does not say which topic; the name is the subscription's.
        BrokerError::WrongMode { subscription, .. } => BusError::Conflict {
            resource: Resource::Native { kind: "subscription", name: subscription.to_string() },
            reason: text,
        },
        BrokerError::UnknownReceipt(_) | BrokerError::NotAssigned { .. } => {
            BusError::lease_lost(LeaseLostCause::Unknown, text)
        }
        BrokerError::LeaseExpired(_) => BusError::lease_lost(LeaseLostCause::Expired, text),
        BrokerError::Closed => BusError::Closed,
        e @ (BrokerError::NoSpace(_) | BrokerError::Storage(_)) => BusError::backend(BACKEND, true, e),
        e => BusError::backend(BACKEND, false, e),
    }
}
