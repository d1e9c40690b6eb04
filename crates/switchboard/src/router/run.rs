//! Running routes: pull deliveries, call the service, settle by its answer, shut down
//! gracefully.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchboard_core::TopicName;
use switchboard_core::contract::{
    BusError, Capability, Delivery, Nack, PublishOptions, Subscription, SubscriptionSpec,
    default_dead_letter_topic,
};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use super::request::{HandlerError, Incoming, Outgoing};
use crate::Bus;
use switchboard_policy::Backoff;

/// A route's service after boxing: what [`Router::route`] accepts once wrapped.
pub type RouteService = BoxCloneSyncService<Incoming, Vec<Outgoing>, HandlerError>;

struct Route {
    name: Arc<str>,
    topic: TopicName,
    spec: SubscriptionSpec,
    service: RouteService,
    concurrency: usize,
}

impl Route {
    /// Where the route's rejected messages go: where the subscription's dead letters go; a
    /// subscription without one (a stream, or no delivery limit) still gets the default name.
    fn dead_letter_topic(&self) -> Result<TopicName, BusError> {
        self.spec.validate()?;
        let topic =
            match self.spec.dead_letter_topic_for(&self.topic)?.or(self.spec.dead_letter_topic.clone()) {
                Some(t) => t,
                None => default_dead_letter_topic(&self.topic, &self.spec.name).map_err(|e| {
                    BusError::InvalidArgument(format!(
                        "route {}: no dead-letter topic name fits ({e}); set dead_letter_topic",
                        self.name
                    ))
                })?,
            };
        if topic == self.topic {
            return Err(BusError::InvalidArgument(format!(
                "route {}: a topic cannot be its own dead-letter topic",
                self.name
            )));
        }
        Ok(topic)
    }
}

/// Binds subscriptions to handlers. Build with [`Router::route`], run with
/// [`Router::start`].
pub struct Router {
    bus: Bus,
    routes: Vec<Route>,
    redelivery: Backoff,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.routes.iter().map(|r| &*r.name).collect();
        f.debug_struct("Router").field("routes", &names).finish()
    }
}

impl Router {
    /// A router publishing handler output through `bus`.
    pub fn new(bus: Bus) -> Router {
        Router {
            bus,
            routes: Vec::new(),
            redelivery: Backoff { initial: Duration::from_millis(200), ..Backoff::default() },
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    /// Adds a route named `name`: deliveries of subscription `spec` on `topic` go to
    /// `service`, at most `spec.prefetch` at a time. The spec is checked by
    /// [`Router::start`], so routes chain without a `?` each.
    #[must_use]
    pub fn route<S>(self, name: &str, topic: TopicName, spec: SubscriptionSpec, service: S) -> Router
    where
        S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let concurrency = spec.prefetch as usize;
        self.route_with_concurrency(name, topic, spec, concurrency, service)
    }

    /// As [`Router::route`], with at most `concurrency` handler calls at once (at most the
    /// prefetch matters: a handler cannot run without a delivery).
    #[must_use]
    pub fn route_with_concurrency<S>(
        mut self,
        name: &str,
        topic: TopicName,
        spec: SubscriptionSpec,
        concurrency: usize,
        service: S,
    ) -> Router
    where
        S: Service<Incoming, Response = Vec<Outgoing>, Error = HandlerError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        self.routes.push(Route {
            name: name.into(),
            topic,
            spec,
            service: BoxCloneSyncService::new(service),
            concurrency: concurrency.max(1),
        });
        self
    }

    /// Sets the backoff of redeliveries after a failed handler call (by delivery attempt).
    #[must_use]
    pub fn with_redelivery_backoff(mut self, backoff: Backoff) -> Router {
        self.redelivery = backoff;
        self
    }

    /// Sets how long [`RunningRouter::shutdown`] waits for handlers in flight.
    #[must_use]
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Router {
        self.shutdown_timeout = timeout;
        self
    }

    /// Checks every route, opens its subscription and starts processing.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] for a route whose spec is invalid or whose dead-letter
    /// topic cannot be named, before any subscription is opened; or a subscription cannot be
    /// opened (nothing is left running then).
    pub async fn start(self) -> Result<RunningRouter, BusError> {
        let dead_letter_topics =
            self.routes.iter().map(Route::dead_letter_topic).collect::<Result<Vec<_>, _>>()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut subscriptions = Vec::with_capacity(self.routes.len());
        for route in &self.routes {
            subscriptions.push(self.bus.subscribe(&route.topic, route.spec.clone()).await?);
        }
        let mut tasks = JoinSet::new();
        let nack_delay = self.bus.capabilities().contains(Capability::NackDelay);
        for ((route, sub), dead_letter_topic) in
            self.routes.into_iter().zip(subscriptions).zip(dead_letter_topics)
        {
            let worker = RouteWorker {
                route,
                dead_letter_topic,
                bus: self.bus.clone(),
                redelivery: self.redelivery,
                nack_delay,
            };
            tasks.spawn(worker.run(sub, stop_rx.clone()));
        }
        Ok(RunningRouter { stop: stop_tx, tasks, bus: self.bus, shutdown_timeout: self.shutdown_timeout })
    }
}

/// A started router. Dropping it stops the routes abruptly (in-flight deliveries are
/// redelivered); call [`shutdown`](RunningRouter::shutdown) to finish them.
pub struct RunningRouter {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    bus: Bus,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for RunningRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRouter").field("routes", &self.tasks.len()).finish()
    }
}

impl RunningRouter {
    /// Stops taking deliveries, lets handlers in flight finish and settle (up to the
    /// shutdown timeout; the rest are redelivered later), closes the subscriptions and
    /// flushes the publisher.
    ///
    /// # Errors
    /// The final flush failed.
    pub async fn shutdown(mut self) -> Result<(), BusError> {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.shutdown_timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("Router shutdown timed out; unfinished deliveries will be redelivered.");
            self.tasks.abort_all();
        }
        self.bus.flush().await
    }

    /// Runs until `signal` completes (e.g. `tokio::signal::ctrl_c()`), then shuts down.
    ///
    /// # Errors
    /// As [`RunningRouter::shutdown`].
    pub async fn run_until<F: std::future::Future>(self, signal: F) -> Result<(), BusError> {
        signal.await;
        self.shutdown().await
    }
}

struct RouteWorker {
    route: Route,
    dead_letter_topic: TopicName,
    bus: Bus,
    redelivery: Backoff,
    nack_delay: bool,
}

impl RouteWorker {
    async fn run(self, mut sub: Subscription, mut stop: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.route.concurrency));
        let mut in_flight = JoinSet::new();
        let mut service = self.route.service.clone();
        let this = Arc::new(self);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.changed() => break,
            };
            let delivery = tokio::select! {
                d = sub.next() => d,
                _ = stop.changed() => break,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(route = %this.route.name, error = %e, "Receiving failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                None => break,
            };
            // The service is called here, in delivery order, so layers that order work
            // (per-key concurrency) see calls in the order the broker handed them out.
            if service.ready().await.is_err() {
                continue;
            }
            let (fut, settled) = this.call(&mut service, delivery);
            let this = this.clone();
            in_flight.spawn(async move {
                this.settle(fut.await, settled).await;
                drop(permit);
            });
            while in_flight.try_join_next().is_some() {}
        }
        // Graceful: deliveries already taken are processed and settled before closing.
        while in_flight.join_next().await.is_some() {}
        if let Err(e) = sub.close().await {
            tracing::warn!(route = %this.route.name, error = %e, "Closing the subscription failed.");
        }
    }

    fn call(
        &self,
        service: &mut RouteService,
        delivery: Delivery,
    ) -> (BoxFuture<'static, Result<Vec<Outgoing>, HandlerError>>, Settling) {
        let (message, info, settled) = delivery.into_parts();
        let attempt = info.attempt;
        let incoming = Incoming {
            message,
            info,
            handler: self.route.name.clone(),
            max_deliveries: self.route.spec.max_deliveries,
            dead_letter_topic: self.dead_letter_topic.clone(),
            system: self.bus.backend().name(),
        };
        (Box::pin(service.call(incoming)), Settling { settled, attempt })
    }

    async fn settle(&self, result: Result<Vec<Outgoing>, HandlerError>, settling: Settling) {
        let Settling { settled, attempt } = settling;
        let outcome = match result {
            Ok(outputs) => match publish_outputs(&self.bus, outputs).await {
                Ok(()) => settled.ack().await,
                Err(e) => settled.nack(self.nack(attempt, &HandlerError::Publish(e))).await,
            },
            Err(e) => settled.nack(self.nack(attempt, &e)).await,
        };
        if let Err(e) = outcome {
            // The broker redelivers whatever was not settled; nothing more to do here.
            tracing::debug!(route = %self.route.name, error = %e, "Settling a delivery failed.");
        }
    }

    fn nack(&self, attempt: u32, error: &HandlerError) -> Nack {
        let delay = match error {
            HandlerError::CircuitOpen(wait) => *wait,
            _ => self.redelivery.delay(attempt),
        };
        let nack = if self.nack_delay { Nack::after(delay) } else { Nack::now() };
        nack.with_error(error.to_string())
    }
}

struct Settling {
    settled: switchboard_core::contract::Settled,
    attempt: u32,
}

/// Publishes a handler's output, grouping consecutive messages for one topic into a batch.
pub(crate) async fn publish_outputs(bus: &Bus, outputs: Vec<Outgoing>) -> Result<(), BusError> {
    let mut batch: Vec<switchboard_core::Message> = Vec::new();
    let mut batch_topic: Option<TopicName> = None;
    for out in outputs {
        if batch_topic.as_ref() != Some(&out.topic) {
            if let Some(t) = batch_topic.take() {
                bus.backend().publish(&t, std::mem::take(&mut batch), &PublishOptions::default()).await?;
            }
            batch_topic = Some(out.topic);
        }
        batch.push(out.message);
    }
    if let Some(t) = batch_topic {
        bus.backend().publish(&t, batch, &PublishOptions::default()).await?;
    }
    Ok(())
}
