//! The `Switchboard` service: each RPC authenticates, checks the permission on the topic,
//! converts the request, calls the broker and converts the answer back.

use std::time::Instant;

use switchboard_broker::{PublishOptions, SeekTo};
use switchboard_core::{Message, Timestamp, TopicName};
use switchboard_proto::reason::key;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Caller;
use super::convert::{self, subscription_name, topic_name};
use super::pb::switchboard::v1 as api;
use crate::auth::Action;
use crate::config::Limits;
use crate::error::ApiError;
use crate::metrics::Api;
use crate::state::AppState;

/// Responses a stream may queue before the server waits for the client to read.
pub(super) const STREAM_BUFFER: usize = 16;

/// Implements the generated `Switchboard` trait over the shared state.
pub(crate) struct SwitchboardService {
    state: AppState,
}

impl SwitchboardService {
    pub(super) fn new(state: AppState) -> SwitchboardService {
        SwitchboardService { state }
    }

    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, ApiError> {
        Caller::of(&self.state, request)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(value: T) -> Reply<T> {
    Ok(Response::new(value))
}

/// Publishes one batch for `caller`: checks the permission, the batch and every event before
/// anything is stored.
async fn publish(
    state: &AppState,
    caller: &Caller,
    req: api::PublishRequest,
) -> Result<api::PublishResponse, ApiError> {
    let started = Instant::now();
    caller.check(Action::Publish, &req.topic)?;
    let (topic, deliver_at, messages) = decode_publish(req, &state.config.limits)?;
    let (n, bytes) = (messages.len() as u64, messages.iter().map(|m| m.data.len() as u64).sum());
    let published = state.broker.publish_batch(&topic, messages, PublishOptions { deliver_at }).await;
    state.telemetry.published(caller.0.service(), topic.as_str(), n, published.is_err(), started.elapsed());
    let receipts = published?;
    state.metrics.published(Api::Grpc, topic.as_str(), n, bytes, started.elapsed());
    Ok(api::PublishResponse { receipts: receipts.into_iter().map(convert::receipt_to_proto).collect() })
}

/// Checks a publish request's topic, batch and every event, and converts them (no broker
/// involved). Also the entry point of the `grpc_request` fuzz target.
pub(crate) fn decode_publish(
    req: api::PublishRequest,
    limits: &Limits,
) -> Result<(TopicName, Option<Timestamp>, Vec<Message>), ApiError> {
    let topic = topic_name(&req.topic)?;
    if req.events.is_empty() {
        return Err(ApiError::BadRequest("the batch holds no events; publish at least one".into()));
    }
    if req.events.len() > limits.max_batch_messages {
        let e = switchboard_broker::BrokerError::BatchTooLarge {
            len: req.events.len(),
            max: limits.max_batch_messages,
        };
        return Err(e.into());
    }
    let deliver_at = req.deliver_at.map(|t| convert::timestamp_from_proto(t, "deliver_at")).transpose()?;
    let mut messages = Vec::with_capacity(req.events.len());
    for (i, event) in req.events.into_iter().enumerate() {
        let m = convert::message_from_event(event, limits.max_message_bytes).map_err(|e| match e {
            ApiError::Broker(switchboard_broker::BrokerError::InvalidMessage(
                switchboard_core::MessageError::TooLarge { .. },
            )) => ApiError::MessageTooLarge(format!("event {i}: {e}")),
            e => ApiError::BadRequest(format!("event {i}: {e}")),
        })?;
        messages.push(m);
    }
    Ok((topic, deliver_at, messages))
}

#[tonic::async_trait]
impl api::switchboard_server::Switchboard for SwitchboardService {
    async fn create_topic(&self, request: Request<api::CreateTopicRequest>) -> Reply<api::Topic> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Admin, &req.name)?;
        let name = topic_name(&req.name)?;
        let config = convert::topic_config_from_proto(req.config, &self.state.config.topic_defaults)?;
        let info = self.state.broker.create_topic(&name, config).await.map_err(ApiError::from)?;
        ok(convert::topic_to_proto(info))
    }

    async fn get_topic(&self, request: Request<api::GetTopicRequest>) -> Reply<api::Topic> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check_read(&req.name)?;
        let info = self.state.broker.topic_info(&topic_name(&req.name)?).map_err(ApiError::from)?;
        ok(convert::topic_to_proto(info))
    }

    async fn list_topics(&self, request: Request<api::ListTopicsRequest>) -> Reply<api::ListTopicsResponse> {
        let caller = self.caller(&request)?;
        let topics = self
            .state
            .broker
            .topics()
            .into_iter()
            .filter(|t| caller.may_read(t.name.as_str()))
            .map(convert::topic_to_proto)
            .collect();
        ok(api::ListTopicsResponse { topics })
    }

    async fn delete_topic(
        &self,
        request: Request<api::DeleteTopicRequest>,
    ) -> Reply<api::DeleteTopicResponse> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Admin, &req.name)?;
        self.state.broker.delete_topic(&topic_name(&req.name)?).await.map_err(ApiError::from)?;
        ok(api::DeleteTopicResponse {})
    }

    async fn create_subscription(
        &self,
        request: Request<api::CreateSubscriptionRequest>,
    ) -> Reply<api::Subscription> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Admin, &req.topic)?;
        let (topic, name) = (topic_name(&req.topic)?, subscription_name(&req.name)?);
        let config = convert::subscription_config_from_proto(req.config)?;
        // The broker creates and writes the dead-letter topic: the caller must administer it.
        if let Some(dlq) = config.dead_letter_topic_for(&topic, &name).map_err(ApiError::from)? {
            caller.check(Action::Admin, dlq.as_str())?;
        }
        let broker = &self.state.broker;
        broker.create_subscription(&topic, &name, config).await.map_err(ApiError::from)?;
        // Read back what was stored (with the dead-letter topic filled in).
        let info = broker.topic_info(&topic).map_err(ApiError::from)?;
        let (_, stored) = info.subscriptions.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            ApiError::NotFound(format!("subscription {name} was deleted while being created"))
        })?;
        ok(convert::subscription_to_proto(&topic, &name, stored))
    }

    async fn list_subscriptions(
        &self,
        request: Request<api::ListSubscriptionsRequest>,
    ) -> Reply<api::ListSubscriptionsResponse> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check_read(&req.topic)?;
        let info = self.state.broker.topic_info(&topic_name(&req.topic)?).map_err(ApiError::from)?;
        ok(api::ListSubscriptionsResponse { subscriptions: convert::topic_to_proto(info).subscriptions })
    }

    async fn delete_subscription(
        &self,
        request: Request<api::DeleteSubscriptionRequest>,
    ) -> Reply<api::DeleteSubscriptionResponse> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Admin, &req.topic)?;
        let (topic, name) = (topic_name(&req.topic)?, subscription_name(&req.name)?);
        self.state.broker.delete_subscription(&topic, &name).await.map_err(ApiError::from)?;
        ok(api::DeleteSubscriptionResponse {})
    }

    async fn publish(&self, request: Request<api::PublishRequest>) -> Reply<api::PublishResponse> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let topic = req.topic.clone();
        // A message too large or a full disk does not name the topic; the request does.
        let published = publish(&self.state, &caller, req).await;
        ok(published.map_err(|e| e.into_status_about(&[(key::TOPIC, &topic)]))?)
    }

    type PublishStreamStream = ReceiverStream<Result<api::PublishStreamResponse, Status>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<api::PublishStreamRequest>>,
    ) -> Reply<Self::PublishStreamStream> {
        let caller = self.caller(&request)?;
        let mut inbound = request.into_inner();
        let state = self.state.clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(async move {
            let _open = state.metrics.connection(Api::Grpc);
            loop {
                // Batches are published one after another, so they are stored in the order
                // they were sent.
                let next = tokio::select! {
                    next = inbound.message() => next,
                    () = tx.closed() => return,
                };
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) => return,
                    Err(status) => {
                        tracing::debug!(%status, "Publish stream ended with an error.");
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let topic = req.batch.as_ref().map(|b| b.topic.clone()).unwrap_or_default();
                let result = match req.batch {
                    None => Err(ApiError::BadRequest("a publish stream request needs a batch".into())),
                    Some(batch) => publish(&state, &caller, batch).await,
                };
                let result = match result {
                    Ok(published) => api::publish_stream_response::Result::Published(published),
                    Err(e) => api::publish_stream_response::Result::Error(convert::error_to_proto(
                        &e,
                        &[(key::TOPIC, &topic)],
                    )),
                };
                let answer = api::PublishStreamResponse { sequence: req.sequence, result: Some(result) };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        ok(ReceiverStream::new(rx))
    }

    type ConsumeStream = ReceiverStream<Result<api::ConsumeResponse, Status>>;

    async fn consume(&self, request: Request<Streaming<api::ConsumeRequest>>) -> Reply<Self::ConsumeStream> {
        let caller = self.caller(&request)?;
        ok(super::consume::spawn(self.state.clone(), caller, request.into_inner()))
    }

    async fn commit(&self, request: Request<api::CommitRequest>) -> Reply<api::CommitResponse> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Consume, &req.topic)?;
        let (topic, sub) = (topic_name(&req.topic)?, subscription_name(&req.subscription)?);
        self.state.broker.commit(&topic, &sub, req.partition, req.offset).await.map_err(ApiError::from)?;
        ok(api::CommitResponse {})
    }

    async fn seek(&self, request: Request<api::SeekRequest>) -> Reply<api::SeekResponse> {
        use api::seek_request::Target;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Consume, &req.topic)?;
        let (topic, sub) = (topic_name(&req.topic)?, subscription_name(&req.subscription)?);
        let to = match req.target {
            Some(Target::Position(p)) => match api::SeekPosition::try_from(p) {
                Ok(api::SeekPosition::Earliest) => SeekTo::Earliest,
                Ok(api::SeekPosition::Latest) => SeekTo::Latest,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "seek position {p} is not SEEK_POSITION_EARLIEST or SEEK_POSITION_LATEST"
                    ))
                    .into());
                }
            },
            Some(Target::Offset(o)) => SeekTo::Offset { partition: o.partition, offset: o.offset },
            Some(Target::Time(t)) => SeekTo::Time(convert::timestamp_from_proto(t, "time")?),
            None => {
                return Err(ApiError::BadRequest(
                    "seek needs a target: a position, an offset or a time".into(),
                )
                .into());
            }
        };
        self.state.broker.seek(&topic, &sub, to).await.map_err(ApiError::from)?;
        ok(api::SeekResponse {})
    }

    async fn redrive(&self, request: Request<api::RedriveRequest>) -> Reply<api::RedriveResponse> {
        const DEFAULT_REDRIVE: usize = 1000;
        const MAX_REDRIVE: usize = 10_000;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Admin, &req.topic)?;
        let (topic, sub) = (topic_name(&req.topic)?, subscription_name(&req.subscription)?);
        // 0 means the default; one call moves at most MAX_REDRIVE letters.
        let max = if req.max == 0 { DEFAULT_REDRIVE } else { (req.max as usize).min(MAX_REDRIVE) };
        let moved = self.state.broker.redrive(&topic, &sub, max).await.map_err(ApiError::from)?;
        ok(api::RedriveResponse { moved: moved as u64 })
    }

    async fn stats(&self, request: Request<api::StatsRequest>) -> Reply<api::SubscriptionStats> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        caller.check(Action::Consume, &req.topic)?;
        let (topic, sub) = (topic_name(&req.topic)?, subscription_name(&req.subscription)?);
        let stats = self.state.broker.stats(&topic, &sub).map_err(ApiError::from)?;
        ok(convert::stats_to_proto(stats))
    }
}
