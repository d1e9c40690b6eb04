//! [`Operation`]: what a call is, for its client span and its error messages.

use opentelemetry::KeyValue;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Other,
    Grpc,
    Http,
}

/// Names a call, says whether it may be repeated, and carries the OpenTelemetry
/// semantic-convention attributes of its client spans. A plain string is a non-idempotent
/// operation with that name and no attributes.
#[derive(Clone, Debug)]
pub struct Operation {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) idempotent: bool,
}

impl Operation {
    /// An operation named `name` (span name and error prefix).
    pub fn new(name: impl Into<String>) -> Operation {
        Operation { name: name.into(), protocol: Protocol::Other, attributes: Vec::new(), idempotent: false }
    }

    /// A gRPC method: span `service/method` with `rpc.system = grpc`, `rpc.service`,
    /// `rpc.method`; attempts record `rpc.grpc.status_code`.
    pub fn grpc(service: &str, method: &str) -> Operation {
        Operation {
            name: format!("{service}/{method}"),
            protocol: Protocol::Grpc,
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_string()),
                KeyValue::new("rpc.method", method.to_string()),
            ],
            idempotent: false,
        }
    }

    /// An HTTP request, idempotent by its method: span named by the method, with `http.request.method`, `url.full`
    /// (without credentials), `server.address` and `server.port`; attempts record
    /// `http.response.status_code` and, from the second on, `http.request.resend_count`.
    pub fn http(method: &http::Method, url: &reqwest::Url) -> Operation {
        let mut shown = url.clone();
        // Credentials never go into telemetry or error messages.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("url.full", shown.to_string()),
        ];
        if let Some(host) = shown.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(port) = shown.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let idempotent = method.is_idempotent();
        Operation { name: format!("{method} {shown}"), protocol: Protocol::Http, attributes, idempotent }
    }

    /// Whether the operation may be repeated without a different effect. Only then is an
    /// attempt that timed out retried: its outcome is unknown, it may have been applied.
    /// Errors that say the request was not processed (e.g. `UNAVAILABLE`) are retried
    /// either way. Default: `false`, except for HTTP, where the method decides (`GET`,
    /// `HEAD`, `PUT`, `DELETE`, `OPTIONS` and `TRACE` are idempotent).
    pub fn idempotent(mut self, idempotent: bool) -> Operation {
        self.idempotent = idempotent;
        self
    }

    /// Adds an attribute to the operation's spans.
    pub fn with_attribute(mut self, attribute: KeyValue) -> Operation {
        self.attributes.push(attribute);
        self
    }

    /// The operation's name, as used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The span name: the semantic conventions name HTTP client spans by the method only
    /// (a full URL would make span names unbounded).
    pub(crate) fn span_name(&self) -> String {
        match self.protocol {
            Protocol::Http => self.name.split(' ').next().unwrap_or("HTTP").to_string(),
            _ => self.name.clone(),
        }
    }
}

impl From<&str> for Operation {
    fn from(name: &str) -> Operation {
        Operation::new(name)
    }
}

impl From<String> for Operation {
    fn from(name: String) -> Operation {
        Operation::new(name)
    }
}
