//! # switchboard-core
//!
//! The vocabulary every other Switchboard crate shares, with no I/O:
//!
//! - [`Message`]: CloudEvents 1.0 attributes (`id`, `source`, `type`, …, extensions such as
//!   `traceparent` and `partitionkey`) plus data bytes, validated in one place;
//! - [`TopicName`] and [`SubscriptionName`]: names that are safe as directory names and URL
//!   segments;
//! - [`Clock`]: the only way engine code learns the time, so tests can move it by hand;
//! - [`contract`]: what a service programs against on any backend (deliveries, subscriptions,
//!   capabilities, errors), and [`backend`]: what a backend implements to join it.
//!
//! ```
//! use switchboard_core::{Message, TopicName};
//!
//! let topic = TopicName::new("orders")?;
//! let msg = Message::new("/shop/order", "order.created", r#"{"id":1}"#).with_key("customer-7");
//! msg.validate(1024 * 1024)?;
//! assert_eq!(msg.partition_key(), Some("customer-7"));
//! assert!(TopicName::new("../etc").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
mod clock;
pub mod contract;
mod hash;
mod message;
mod names;
mod rfc3339;
mod traceparent;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use hash::fnv1a_64;
pub use message::{
    EXT_PARTITION_KEY, EXT_TRACEPARENT, EXT_TRACESTATE, MAX_ATTRIBUTE_LEN, MAX_EXTENSION_NAME_LEN, Message,
    MessageError, SPEC_VERSION, is_extension_name, is_rfc3339, new_message_id,
};
pub use names::{
    MAX_NAME_LEN, MAX_SERVICE_NAME_LEN, NameError, SubscriptionName, TopicName, is_service_name,
};
pub use traceparent::TraceParent;

/// The OpenTelemetry instrumentation scope of every span Switchboard's crates start.
pub const TRACER_NAME: &str = "switchboard";
