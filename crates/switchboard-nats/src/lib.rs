//! # switchboard-nats
//!
//! The NATS JetStream backend of the Switchboard SDK: [`NatsBackend`] implements the
//! backend contract ([`Backend`](switchboard_core::backend::Backend), thus
//! [`Publisher`](switchboard_core::backend::Publisher) and
//! [`Subscriber`](switchboard_core::backend::Subscriber)) on a NATS server with JetStream
//! (2.9 or later; only 2.9 features are used).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_core::contract::BusError> {
//! use switchboard_core::contract::PublishOptions;
//! use switchboard_core::backend::{Backend, Publisher};
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
//! | queue subscription | a durable pull consumer on the stream, `AckPolicy::Explicit`, `AckWait` = lease |
//! | stream subscription | a cursor (next sequence to read) in the KV bucket `SB_CURSORS`, read with an ephemeral ordered pull consumer from the cursor |
//! | attempt / offset | queue: the message's delivered count; stream: counted by the reader / the stream sequence |
//! | nack, nack with delay | queue: `-NAK`, `-NAK {"delay": ns}`; stream: redelivered by the reader |
//! | extend | queue: `+WPI` (restarts a full lease); stream: no lease, a no-op |
//! | dead letters | queue: done by the backend: publish to the dead-letter topic, then `+TERM` |
//!
//! Topics have one partition: `TopicSpec::partitions` above 1 is ignored (a stream is one
//! ordered log; deliveries report partition 0).
//!
//! ## Capabilities
//!
//! - `queue`: members of a queue subscription pull from one durable consumer and compete.
//! - `stream`: a stream subscription is a log cursor. Opening it reads from its committed
//!   position, in stream (publish) order, whatever happened to deliveries a previous reader
//!   left unsettled. An ack commits up to the lowest delivery still unsettled (out-of-order
//!   acks hold the commit back); commits are written to JetStream at most every 50 ms and on
//!   close, so after a crash the last acks may be replayed (at-least-once, never skipped).
//!   A nack (or a dropped delivery) is redelivered by the reader after the nack's delay, with
//!   attempt + 1, before newer messages. Stream deliveries have no lease (`extend` is a
//!   no-op): they stay unsettled as long as the handler needs. See the `stream` and
//!   `cursor` module docs for the details.
//! - `replay_from_start`: `Start::Earliest` starts a new stream subscription at the topic's
//!   first sequence (a queue's consumer at `DeliverPolicy::All`); `Start::Latest` at the last
//!   sequence + 1 when it is created, stored at once so a reopen resumes.
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
//! - `stream_groups: false`: members of one stream subscription do not split it: each reads
//!   everything from the cursor and they commit to the same cursor (which never moves back),
//!   so run one reader at a time; after a crash it resumes from the commit (at-least-once).
//! - `stats: true`: queue subscriptions from consumer info (backlog = pending + unacked, in
//!   flight = unacked, lag = last stream sequence − ack floor); stream subscriptions from the
//!   cursor (backlog = lag = last stream sequence + 1 − committed position, counted in
//!   sequences; in flight = deliveries read and not acked by readers open on this
//!   connection).
//!
//! Subscription names are per topic and per mode-exclusive: opening a queue subscription
//! under the name of a stream subscription (or the other way round) is a `Conflict`.
//! `delete_subscription` removes the consumer or the cursor.
//!
//! ## Dead letters and leases (queue subscriptions)
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
//! reconnects by itself and subscriptions keep pulling (with jittered exponential backoff,
//! `switchboard_policy::Reconnect`) across server restarts. Calls during an outage fail with retryable errors after 5 s.

mod backend;
mod connect;
mod cursor;
mod dead_letter;
mod errors;
mod headers;
mod naming;
mod publish;
mod pull;
mod settle;
mod stream;
mod subscribe;

pub use backend::NatsBackend;
