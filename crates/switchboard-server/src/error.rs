//! One error type for the API edges, mapped to HTTP problem details (RFC 9457) and to gRPC
//! status codes, each with a message written for the person reading it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_broker::BrokerError;
use switchboard_core::MessageError;

use crate::auth::AuthError;

/// An error at the API edge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Authentication or authorization.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed (bad JSON, bad CloudEvent, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The request is too large.
    #[error("{0}")]
    TooLarge(String),
    /// The media type is not supported.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something that is not there.
    #[error("{0}")]
    NotFound(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        use BrokerError as B;
        match self {
            ApiError::Broker(e) => match e {
                B::InvalidMessage(MessageError::TooLarge { .. }) | B::BatchTooLarge { .. } => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                B::InvalidName(_)
                | B::InvalidMessage(_)
                | B::InvalidConfig(_)
                | B::InvalidArgument(_)
                | B::OffsetOutOfRange { .. } => StatusCode::BAD_REQUEST,
                B::TopicNotFound(_)
                | B::SubscriptionNotFound { .. }
                | B::PartitionNotFound { .. }
                | B::UnknownReceipt(_) => StatusCode::NOT_FOUND,
                B::TopicExists(_)
                | B::SubscriptionExists { .. }
                | B::WrongMode { .. }
                | B::NotAssigned { .. } => StatusCode::CONFLICT,
                B::LeaseExpired(_) => StatusCode::GONE,
                B::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
                B::Closed | B::DataDirInUse(_) => StatusCode::SERVICE_UNAVAILABLE,
                B::Storage(_) | B::CorruptState { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Auth(AuthError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self.status() {
            StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::INSUFFICIENT_STORAGE => Code::ResourceExhausted,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => match self {
                ApiError::Broker(BrokerError::TopicExists(_) | BrokerError::SubscriptionExists { .. }) => {
                    Code::AlreadyExists
                }
                _ => Code::FailedPrecondition,
            },
            StatusCode::GONE => Code::FailedPrecondition,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        }
    }

    /// A short machine-readable name of the problem type.
    fn kind(&self) -> &'static str {
        use BrokerError as B;
        match self {
            ApiError::Broker(e) => match e {
                B::InvalidName(_) => "invalid-name",
                B::InvalidMessage(MessageError::TooLarge { .. }) => "message-too-large",
                B::InvalidMessage(_) => "invalid-message",
                B::InvalidConfig(_) => "invalid-config",
                B::InvalidArgument(_) => "invalid-argument",
                B::TopicNotFound(_) => "topic-not-found",
                B::TopicExists(_) => "topic-exists",
                B::SubscriptionNotFound { .. } => "subscription-not-found",
                B::SubscriptionExists { .. } => "subscription-exists",
                B::WrongMode { .. } => "wrong-mode",
                B::PartitionNotFound { .. } => "partition-not-found",
                B::UnknownReceipt(_) => "unknown-receipt",
                B::LeaseExpired(_) => "lease-expired",
                B::NotAssigned { .. } => "not-assigned",
                B::OffsetOutOfRange { .. } => "offset-out-of-range",
                B::BatchTooLarge { .. } => "batch-too-large",
                B::NoSpace(_) => "no-space",
                B::Storage(_) | B::CorruptState { .. } => "storage-failure",
                B::Closed => "closed",
                B::DataDirInUse(_) => "data-dir-in-use",
            },
            ApiError::Auth(AuthError::Forbidden { .. }) => "forbidden",
            ApiError::Auth(_) => "unauthenticated",
            ApiError::BadRequest(_) => "bad-request",
            ApiError::TooLarge(_) => "too-large",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::NotFound(_) => "not-found",
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("https://switchboard.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut resp = (status, body.to_string()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
