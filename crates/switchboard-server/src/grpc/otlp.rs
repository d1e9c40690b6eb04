//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on the
//! server's gRPC port, beside Switchboard's own service, for exporters configured with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`. The same checks and the same graph as `POST
//! /v1/traces`: the `telemetry` permission, the request size limit, a refused request
//! (`INVALID_ARGUMENT`) changes nothing, spans the limits turn away are a partial success.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use switchboard_graph::otlp;
use tonic::{Request, Response, Status};

use super::Caller;
use crate::auth::Action;
use crate::error::ApiError;
use crate::state::AppState;

pub(super) struct OtlpTraces {
    state: AppState,
}

impl OtlpTraces {
    pub(super) fn new(state: AppState) -> OtlpTraces {
        OtlpTraces { state }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpTraces {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let caller = Caller::of(&self.state, &request)?;
        caller.0.check(Action::Telemetry, None).map_err(ApiError::from)?;
        let spans =
            otlp::from_proto(request.into_inner()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ingested = self.state.telemetry.with_graph(|g| g.ingest(spans, crate::telemetry::now_s()));
        Ok(Response::new(otlp::response_message(ingested.rejected, ingested.reason.as_deref())))
    }
}
