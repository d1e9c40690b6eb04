//! A projection fed by a stream subscription of the bus instead of the event store's feed:
//! a read model of another service's events, in this service's database.
//!
//! Each delivery is applied in a transaction that also moves the checkpoint of its
//! partition to its offset, and acked after the commit. A redelivery (the process died
//! after the commit and before the ack, or the backend redelivers) has an offset at or below
//! the checkpoint and is acked without being applied again, so each message takes effect
//! once, on every backend.

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::{Message, SubscriptionName, Timestamp, TopicName};
use switchboard_policy::Reconnect;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Projection, ProjectionDatabase, ProjectionError, Tables};
use crate::Bus;
use crate::eventstore::{
    EXT_SCHEMA_VERSION, EXT_STREAM_VERSION, Metadata, Position, RecordedEvent, StreamName,
};
use crate::layers::{EXT_CAUSATION_ID, EXT_CORRELATION_ID};
use crate::outbox::now_ms;
use crate::{DeliveryInfo, Nack, Start, SubscriptionSpec};

/// The only generation of a bus-fed projection (it is not rebuilt: a topic's retention need
/// not hold its whole history).
const GENERATION: i64 = 1;

/// A projection fed by a stream subscription on `topic`.
pub struct StreamProjector<P, DB: ProjectionDatabase> {
    name: String,
    projection: Arc<P>,
    pool: sqlx::Pool<DB>,
    bus: Bus,
    topic: TopicName,
}

impl<P: Projection<DB>, DB: ProjectionDatabase> StreamProjector<P, DB> {
    /// `projection` under `name` (which also names its stream subscription), fed by
    /// `topic` from its earliest retained message, with its tables in `pool`'s database.
    ///
    /// # Errors
    /// [`ProjectionError::Invalid`] for a bad projection or table name.
    pub fn new(
        name: impl Into<String>,
        projection: P,
        pool: sqlx::Pool<DB>,
        bus: Bus,
        topic: TopicName,
    ) -> Result<Self, ProjectionError> {
        let name = name.into();
        super::runner::check_names(&name, projection.tables())?;
        Ok(StreamProjector { name, projection: Arc::new(projection), pool, bus, topic })
    }

    /// Creates the tables on first use and starts following the topic.
    ///
    /// # Errors
    /// The tables cannot be created, or the subscription is refused.
    pub async fn start(self) -> Result<RunningStreamProjection, ProjectionError> {
        DB::create_projection_tables(&self.pool).await?;
        let mut tx = DB::begin_write(&self.pool).await?;
        if DB::projection_state(&mut tx, &self.name).await?.is_none() {
            let tables = Tables::new(1, self.projection.tables());
            self.projection.create(&mut tx, &tables).await?;
            super::runner::point_views_at::<DB>(&mut tx, &tables).await?;
            DB::set_projection_state(&mut tx, &self.name, GENERATION, None, now_ms()).await?;
            tx.commit().await?;
        } else {
            drop(tx);
        }
        let subscription = SubscriptionName::new(self.name.clone()).map_err(|e| {
            ProjectionError::Invalid(format!("projection name {:?} as a subscription: {e}", self.name))
        })?;
        let spec = SubscriptionSpec::stream(subscription).with_start(Start::Earliest);
        let sub = self
            .bus
            .subscribe(&self.topic, spec)
            .await
            .map_err(|e| ProjectionError::Handler(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        let applied = Arc::new(watch::Sender::new(0_u64));
        let task = tokio::spawn(run(Arc::new(self), sub, stopped, applied.clone()));
        Ok(RunningStreamProjection { stop, applied, task })
    }

    /// Applies one delivery unless its offset is at or below its partition's checkpoint;
    /// whether it was applied.
    async fn apply(&self, message: &Message, info: &DeliveryInfo) -> Result<bool, ProjectionError> {
        let partition = i64::from(info.partition);
        let offset = i64::try_from(info.offset).unwrap_or(i64::MAX);
        let mut tx = DB::begin_write(&self.pool).await?;
        let checkpoint = DB::lock_checkpoint(&mut tx, &self.name, GENERATION, partition).await?;
        if checkpoint.is_some_and(|c| offset <= c) {
            return Ok(false);
        }
        let event = recorded_from_message(message, info)?;
        self.projection.apply(&mut tx, &Tables::new(1, self.projection.tables()), &event).await?;
        DB::set_checkpoint(&mut tx, &self.name, GENERATION, partition, offset, now_ms()).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A bus-fed projection following its topic in a background task.
pub struct RunningStreamProjection {
    stop: watch::Sender<bool>,
    applied: Arc<watch::Sender<u64>>,
    task: JoinHandle<()>,
}

impl RunningStreamProjection {
    /// How many messages this runner has applied (redeliveries it skipped not counted).
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this runner has applied `n` messages.
    pub async fn wait_for_applied(&self, n: u64) {
        let _ = self.applied.subscribe().wait_for(|a| *a >= n).await;
    }

    /// Stops after the message in flight.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn run<P: Projection<DB>, DB: ProjectionDatabase>(
    projector: Arc<StreamProjector<P, DB>>,
    mut sub: crate::Subscription,
    mut stop: watch::Receiver<bool>,
    applied: Arc<watch::Sender<u64>>,
) {
    let mut failures = Reconnect::up_to(Duration::from_secs(30));
    loop {
        let delivery = tokio::select! {
            _ = stop.changed() => return,
            next = sub.next() => next,
        };
        let delivery = match delivery {
            None => return,
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => {
                tracing::warn!(projection = %projector.name, error = %e, "The projection's subscription failed; it retries.");
                tokio::time::sleep(failures.next_delay()).await;
                continue;
            }
        };
        match projector.apply(delivery.message(), delivery.info()).await {
            Ok(was_applied) => {
                failures = Reconnect::up_to(Duration::from_secs(30));
                if was_applied {
                    applied.send_modify(|n| *n += 1);
                }
                if let Err(e) = delivery.ack().await {
                    // Committed already: the redelivery is recognised by its offset.
                    tracing::debug!(projection = %projector.name, error = %e, "Ack failed after the projection committed.");
                }
            }
            Err(e) => {
                let delay = failures.next_delay();
                tracing::warn!(projection = %projector.name, error = %e, retry_in = ?delay, "A projection could not apply a message; it is redelivered.");
                metrics::counter!("switchboard_projection_errors_total", "projection" => projector.name.clone())
                    .increment(1);
                let _ = delivery.nack(Nack::after(delay).with_error(e.to_string())).await;
            }
        }
    }
}

/// A message as the event a projection handler reads: the stream is the `subject` (or the
/// partition key), the version and schema version come from `streamversion` and
/// `schemaversion` where the publisher set them (as the event store does), the position is
/// the offset in its partition.
///
/// # Errors
/// [`ProjectionError::Invalid`] when the message names no usable stream.
pub fn recorded_from_message(
    message: &Message,
    info: &DeliveryInfo,
) -> Result<RecordedEvent, ProjectionError> {
    let ext = |name: &str| message.extensions.get(name);
    let stream = message.subject.as_deref().or(message.partition_key()).unwrap_or(info.topic.as_str());
    let stream = StreamName::new(stream).map_err(|e| ProjectionError::Invalid(e.to_string()))?;
    let metadata = Metadata {
        correlation_id: ext(EXT_CORRELATION_ID).cloned(),
        causation_id: ext(EXT_CAUSATION_ID).cloned(),
        traceparent: ext(switchboard_core::EXT_TRACEPARENT).cloned(),
        ..Metadata::default()
    };
    let recorded_at = message
        .time
        .as_deref()
        .and_then(Timestamp::parse_rfc3339)
        .or(info.published_at)
        .unwrap_or(Timestamp(u64::try_from(now_ms()).unwrap_or(0)));
    Ok(RecordedEvent {
        stream,
        version: ext(EXT_STREAM_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0),
        position: Some(Position(info.offset)),
        id: message.id.clone(),
        ty: message.ty.clone(),
        schema_version: ext(EXT_SCHEMA_VERSION).and_then(|v| v.parse().ok()).unwrap_or(1),
        data: message.data.clone(),
        metadata,
        recorded_at,
    })
}
