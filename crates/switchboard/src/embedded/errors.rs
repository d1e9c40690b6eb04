//! Broker errors in the contract's terms.

use switchboard_broker::BrokerError;
use switchboard_core::contract::BusError;

pub(crate) const BACKEND: &str = "embedded";

/// Maps a broker error onto the contract's error, keeping the broker's message.
pub(crate) fn to_bus(e: BrokerError) -> BusError {
    match e {
        BrokerError::InvalidName(n) => BusError::InvalidName(n),
        BrokerError::InvalidMessage(m) => BusError::InvalidMessage(m),
        BrokerError::InvalidConfig(s) | BrokerError::InvalidArgument(s) => BusError::InvalidArgument(s),
        e @ (BrokerError::BatchTooLarge { .. }
        | BrokerError::OffsetOutOfRange { .. }
        | BrokerError::PartitionNotFound { .. }) => BusError::InvalidArgument(e.to_string()),
        e @ (BrokerError::TopicNotFound(_) | BrokerError::SubscriptionNotFound { .. }) => {
            BusError::NotFound(e.to_string().trim_end_matches(" does not exist").to_owned())
        }
        e @ (BrokerError::TopicExists(_)
        | BrokerError::SubscriptionExists { .. }
        | BrokerError::WrongMode { .. }) => BusError::Conflict(e.to_string()),
        e @ (BrokerError::UnknownReceipt(_)
        | BrokerError::LeaseExpired(_)
        | BrokerError::NotAssigned { .. }) => BusError::LeaseLost(e.to_string()),
        BrokerError::Closed => BusError::Closed,
        e @ (BrokerError::NoSpace(_) | BrokerError::Storage(_)) => BusError::backend(BACKEND, true, e),
        e => BusError::backend(BACKEND, false, e),
    }
}
