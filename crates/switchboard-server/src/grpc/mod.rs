//! gRPC API (`switchboard.v1`, see `proto/switchboard/v1/switchboard.proto`): one
//! `Switchboard` service for admin, publish (unary batches and a bidirectional stream with one
//! answer per batch), consume (a bidirectional stream with credits, acks, nacks, lease
//! extension and commits), seek, redrive and stats; messages are CloudEvents in their protobuf
//! format. Standard health checking (`grpc.health.v1`) and server reflection (v1 and v1alpha)
//! are served next to it.
//!
//! The `.proto` files are compiled by `build.rs` with protox, so building needs no `protoc`.
//!
//! Every call authenticates its `authorization` metadata and checks the permission on the
//! topic before touching the broker ([`Caller`]); errors become [`ApiError`]s and from there
//! gRPC statuses with a message for a person and, in the status details, a
//! `google.rpc.ErrorInfo` for a program (`switchboard_proto::reason`).

mod consume;
mod convert;
mod otlp;
mod service;

// For the fuzz targets (`crate::fuzzing`).
pub(crate) use consume::parse_receipts;
pub(crate) use convert::{subscription_config_from_proto, timestamp_from_proto, topic_config_from_proto};
pub(crate) use service::decode_publish;

use futures::FutureExt as _;
use tonic::service::Routes;

use crate::auth::{Action, Principal};
use crate::error::ApiError;
use crate::state::AppState;

/// Generated types, server and client of `switchboard.v1` and `io.cloudevents.v1`.
pub use switchboard_proto as pb;

use switchboard_proto::FILE_DESCRIPTOR_SET;

type SwitchboardServer =
    pb::switchboard::v1::switchboard_server::SwitchboardServer<service::SwitchboardService>;

/// Every gRPC service: the API, health checking and reflection.
pub(crate) fn routes(state: AppState) -> Routes {
    let max_request = state.config.limits.max_request_bytes;
    let api = SwitchboardServer::new(service::SwitchboardService::new(state.clone()))
        .max_decoding_message_size(max_request);

    let (reporter, health) = tonic_health::server::health_reporter();
    // Health checks say NOT_SERVING as soon as shutdown begins, like /readyz.
    {
        let (reporter, state) = (reporter.clone(), state.clone());
        tokio::spawn(async move {
            state.shutting_down().await;
            reporter.set_not_serving::<SwitchboardServer>().await;
        });
    }
    // The reporter's lock is fresh, so this completes at once; spawn only as a fallback.
    if reporter.set_serving::<SwitchboardServer>().now_or_never().is_none() {
        tokio::spawn(async move { reporter.set_serving::<SwitchboardServer>().await });
    }

    let otlp =
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
            otlp::OtlpTraces::new(state.clone()),
        )
        .max_decoding_message_size(max_request);
    let mut routes = Routes::new(api).add_service(health).add_service(otlp);
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => routes = routes.add_service(v1).add_service(v1alpha),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "The gRPC descriptors are unusable: serving without reflection.");
        }
    }
    routes
}

/// The authenticated caller of a gRPC call.
struct Caller(Principal);

impl Caller {
    /// Authenticates the `authorization: Bearer …` metadata.
    fn of<T>(state: &AppState, request: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let service = request.metadata().get(crate::auth::SERVICE_HEADER).map(|v| v.as_bytes());
        let principal = state.auth.authenticate(header)?;
        Ok(Caller(principal.with_service(service).map_err(ApiError::BadRequest)?))
    }

    /// Allows `action` on `topic`.
    fn check(&self, action: Action, topic: &str) -> Result<(), ApiError> {
        Ok(self.0.check(action, Some(topic))?)
    }

    /// Allows reading a topic's settings: `admin` or `consume` on it.
    fn check_read(&self, topic: &str) -> Result<(), ApiError> {
        self.check(Action::Admin, topic).or_else(|e| self.check(Action::Consume, topic).map_err(|_| e))
    }

    /// Whether the caller may see `topic` in lists.
    fn may_read(&self, topic: &str) -> bool {
        self.0.may(Action::Admin, topic) || self.0.may(Action::Consume, topic)
    }
}
