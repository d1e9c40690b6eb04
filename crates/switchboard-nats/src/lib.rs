//! # switchboard-nats
//!
//! The NATS JetStream backend of the Switchboard SDK: [`NatsBackend`] implements the
//! backend contract ([`Backend`](switchboard_core::contract::Backend), thus
//! [`Publisher`](switchboard_core::contract::Publisher) and
//! [`Subscriber`](switchboard_core::contract::Subscriber)) on a NATS server with JetStream
//! (2.9 or later; only 2.9 features are used).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_core::contract::BusError> {
//! use switchboard_core::contract::{Backend, PublishOptions, Publisher};
//! use switchboard_core::{Message, TopicName};
//!
//! let bus = switchboard_nats::NatsBackend::connect("nats://127.0.0.1:4222").await?;
//! let topic = TopicName::new("orders.created")?;
//! bus.publish(&topic, vec![Message::new("/shop", "order.created", "{}")], &PublishOptions::default())
//!     .await?;
//! bus.close().await
//! # }
//! ```
//!
//! ## Mapping
//!
//! | Switchboard | JetStream |
//! |---|---|
//! | topic | a stream `SB_<escaped topic>` ([`NatsBackend::stream_name`]), file storage, one subject `sb.t.<topic>` ([`NatsBackend::subject`]) |
//! | publish | JetStream publish awaiting the PubAck, `Nats-Msg-Id` = message id |
//! | attributes | `ce-*` headers (CloudEvents NATS binding), `Content-Type`, data = payload |
//! | subscription | a durable pull consumer on the stream, `AckPolicy::Explicit`, `AckWait` = lease |
//! | attempt / offset | the message's delivered count / stream sequence |
//! | nack, nack with delay | `-NAK`, `-NAK {"delay": ns}` |
//! | extend | `+WPI` (restarts a full lease) |
//! | dead letters | done by the backend: publish to the dead-letter topic, then `+TERM` |
//!
//! Topics have one partition: `TopicSpec::partitions` above 1 is ignored (a stream is one
//! ordered log; deliveries report partition 0).
//!
//! ## Capabilities
//!
//! - `queue`: members of a queue subscription pull from one durable consumer and compete.
//! - `stream`: a stream subscription is a durable consumer whose acks commit; messages come
//!   in stream (publish) order. A nacked message is redelivered after later ones were
//!   delivered, so order holds for a reader that acks in order.
//! - `replay_from_start`: `Start::Earliest` is `DeliverPolicy::All`.
//! - `per_key_order: false`: JetStream has no per-key in-flight limit (2.9).
//! - `delayed_delivery: false`: JetStream 2.9 cannot hold a message back; `deliver_at` is
//!   refused with `Unsupported`.
//! - `nack_delay: true`: `-NAK` with a delay (server ≥ 2.7).
//! - `lease_extension: true`: `+WPI` restarts the full `AckWait`; an extension always gets
//!   at least what was asked (a whole lease for shorter ones; longer ones are kept alive by
//!   re-sending `+WPI` every half lease).
//! - `native_dead_letter: false`: JetStream only stops redelivering after `MaxDeliver`;
//!   the backend moves messages itself (see below).
//! - `dedup: true`: `Nats-Msg-Id` within the stream's 2-minute duplicate window.
//! - `persistence: true`: streams use file storage (acked publishes are stored; fsync per
//!   JetStream's `sync_interval`).
//! - `stream_groups: false`: several members of one stream subscription would compete for
//!   its messages, so run one reader at a time; after a crash it resumes from the last acked
//!   message (at-least-once).
//! - `stats: true`: from consumer info (backlog = pending + unacked, in flight = unacked,
//!   lag = last stream sequence − ack floor).
//!
//! ## Dead letters and leases
//!
//! The consumer's `MaxDeliver` is unlimited. A nack of attempt `max_deliveries` publishes
//! the message to the dead-letter topic (`dlreason` = `nacked`) and then terminates the
//! original. A message delivered with attempt > `max_deliveries` had its last lease run
//! out: the backend dead-letters it (`dlreason` = `lease expired`) without handing it out.
//! The dead letter is confirmed before the original is terminated, so nothing is lost
//! between them.
//!
//! ## Connection
//!
//! `connect` tries once (3 s) and fails with `Unreachable`; afterwards the client
//! reconnects by itself and subscriptions keep pulling (with back-off) across server
//! restarts. Calls during an outage fail with retryable errors after 5 s.

mod backend;
mod connect;
mod dead_letter;
mod errors;
mod headers;
mod naming;
mod publish;
mod pull;
mod settle;
mod subscribe;

pub use backend::NatsBackend;
