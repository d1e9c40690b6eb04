//! Exporting the SDK's spans over OTLP, configured the standard OpenTelemetry way, so they
//! reach `switchboard serve`'s service graph — or any collector, Jaeger or Tempo — without
//! code changes. (Feature `otlp`.)
//!
//! ```no_run
//! # fn main() -> Result<(), switchboard::telemetry::TelemetryError> {
//! // OTEL_SERVICE_NAME=order OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8080
//! let _telemetry = switchboard::telemetry::init_from_env("order")?;
//! // … the service runs; dropping the guard flushes what is left.
//! # Ok(()) }
//! ```
//!
//! The variables read are the specification's: `OTEL_EXPORTER_OTLP_ENDPOINT` (the base URL;
//! spans go to `<base>/v1/traces`) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the whole URL),
//! `OTEL_EXPORTER_OTLP_HEADERS` / `…_TRACES_HEADERS` (`authorization=Bearer%20<token>` for a
//! broker with tokens), `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the one supported), `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER` (`none` turns export off). Spans leave in
//! batches from a background thread, so publishing and handling never wait for the exporter.

use opentelemetry::global;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A variable holds a value this exporter does not take.
    #[error("{variable}={value:?}: {reason}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What to set instead.
        reason: &'static str,
    },
    /// The exporter could not be built (a malformed endpoint, for one).
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// Export in place; dropping it (or [`Telemetry::shutdown`]) flushes the spans still
/// buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// The tracer provider, for spans of the service's own.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Sends every finished span now.
    ///
    /// # Errors
    /// The exporter failed (the collector is unreachable, for one).
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider.force_flush().map_err(|e| TelemetryError::Exporter(e.to_string()))
    }

    /// Flushes and stops exporting.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "Spans could not all be exported at shutdown.");
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Exports spans over OTLP/HTTP as the `OTEL_*` variables say and makes it the global
/// tracer provider, with W3C trace-context propagation; the service is `OTEL_SERVICE_NAME`,
/// else `default_service`. `None` (and nothing installed) when no endpoint is configured or
/// export is turned off.
///
/// # Errors
/// An unsupported protocol or exporter, or an endpoint the exporter refuses.
pub fn init_from_env(default_service: &str) -> Result<Option<Telemetry>, TelemetryError> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    match var("OTEL_TRACES_EXPORTER").as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(TelemetryError::Unsupported {
                variable: "OTEL_TRACES_EXPORTER",
                value: other.to_owned(),
                reason: "use otlp or none",
            });
        }
    }
    if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
        return Ok(None);
    }
    for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(value) = var(variable)
            && value != "http/protobuf"
        {
            return Err(TelemetryError::Unsupported {
                variable,
                value,
                reason: "this exporter speaks http/protobuf (what switchboard serve, collectors, Jaeger and Tempo accept on /v1/traces)",
            });
        }
    }
    // `Resource::builder()` reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    let mut resource = Resource::builder();
    if var("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_service.to_owned());
    }
    let telemetry = exporting(None, resource.build())?;
    install_global(&telemetry.provider);
    Ok(Some(telemetry))
}

/// Exports spans to `endpoint` (the whole traces URL, such as
/// `http://127.0.0.1:8080/v1/traces`) as service `service`, without touching the
/// environment; installed as the global provider only if `global` is true.
///
/// # Errors
/// An endpoint the exporter refuses.
pub fn init(endpoint: &str, service: &str, global: bool) -> Result<Telemetry, TelemetryError> {
    let telemetry =
        exporting(Some(endpoint), Resource::builder().with_service_name(service.to_owned()).build())?;
    if global {
        install_global(&telemetry.provider);
    }
    Ok(telemetry)
}

/// A provider batching its spans to an OTLP/HTTP exporter: at `endpoint`, or where the
/// `OTEL_EXPORTER_OTLP_*` variables say.
fn exporting(endpoint: Option<&str>, resource: Resource) -> Result<Telemetry, TelemetryError> {
    let mut exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_protocol(Protocol::HttpBinary);
    if let Some(endpoint) = endpoint {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter.build().map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    Ok(Telemetry { provider })
}

fn install_global(provider: &SdkTracerProvider) {
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());
}
