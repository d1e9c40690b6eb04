//! One error type for the API edges, mapped to HTTP problem details (RFC 9457) and to gRPC
//! status codes, each with a message written for the person reading it and a machine-readable
//! [`Reason`] (the problem `type`, and `google.rpc.ErrorInfo` in gRPC status details).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchboard_broker::BrokerError;
use switchboard_core::MessageError;
use switchboard_proto::reason::{self, Reason, key};

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
    /// One message of a request is over the size limit (the message says which).
    #[error("{0}")]
    MessageTooLarge(String),
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
            ApiError::TooLarge(_) | ApiError::MessageTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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

    /// The machine-readable kind of the problem: the HTTP problem `type` and the gRPC
    /// `ErrorInfo.reason`, from the one list in `switchboard_proto::reason`.
    pub fn reason(&self) -> Reason {
        use BrokerError as B;
        match self {
            ApiError::Broker(e) => match e {
                B::InvalidName(_) => Reason::InvalidName,
                B::InvalidMessage(MessageError::TooLarge { .. }) => Reason::MessageTooLarge,
                B::InvalidMessage(_) => Reason::InvalidMessage,
                B::InvalidConfig(_) => Reason::InvalidConfig,
                B::InvalidArgument(_) => Reason::InvalidArgument,
                B::TopicNotFound(_) => Reason::TopicNotFound,
                B::TopicExists(_) => Reason::TopicExists,
                B::SubscriptionNotFound { .. } => Reason::SubscriptionNotFound,
                B::SubscriptionExists { .. } => Reason::SubscriptionExists,
                B::WrongMode { .. } => Reason::WrongMode,
                B::PartitionNotFound { .. } => Reason::PartitionNotFound,
                B::UnknownReceipt(_) => Reason::UnknownReceipt,
                B::LeaseExpired(_) => Reason::LeaseExpired,
                B::NotAssigned { .. } => Reason::NotAssigned,
                B::OffsetOutOfRange { .. } => Reason::OffsetOutOfRange,
                B::BatchTooLarge { .. } => Reason::BatchTooLarge,
                B::NoSpace(_) => Reason::NoSpace,
                B::Storage(_) | B::CorruptState { .. } => Reason::StorageFailure,
                B::Closed => Reason::Closed,
                B::DataDirInUse(_) => Reason::DataDirInUse,
            },
            ApiError::Auth(AuthError::Forbidden { .. }) => Reason::Forbidden,
            ApiError::Auth(_) => Reason::Unauthenticated,
            ApiError::BadRequest(_) => Reason::BadRequest,
            ApiError::TooLarge(_) => Reason::TooLarge,
            ApiError::MessageTooLarge(_) => Reason::MessageTooLarge,
            ApiError::UnsupportedMediaType(_) => Reason::UnsupportedMediaType,
            ApiError::NotFound(_) => Reason::NotFound,
        }
    }

    /// The resources the error itself names, as `ErrorInfo` metadata (keys from
    /// `switchboard_proto::reason::key`).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        use BrokerError as B;
        let ApiError::Broker(e) = self else { return Vec::new() };
        match e {
            B::TopicNotFound(t) | B::TopicExists(t) => vec![(key::TOPIC, t.to_string())],
            B::SubscriptionNotFound { topic, subscription }
            | B::SubscriptionExists { topic, subscription } => {
                vec![(key::TOPIC, topic.to_string()), (key::SUBSCRIPTION, subscription.to_string())]
            }
            B::WrongMode { subscription, .. } => vec![(key::SUBSCRIPTION, subscription.to_string())],
            B::PartitionNotFound { topic, partition, .. } => {
                vec![(key::TOPIC, topic.to_string()), (key::PARTITION, partition.to_string())]
            }
            B::UnknownReceipt(r) | B::LeaseExpired(r) => vec![(key::RECEIPT, r.clone())],
            B::NotAssigned { partition } | B::OffsetOutOfRange { partition, .. } => {
                vec![(key::PARTITION, partition.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// [`metadata`](Self::metadata), with the resources of the request (`about`) for the keys
    /// the error does not name itself: a message too large or a full disk says nothing about
    /// the topic, the request does. Empty values are left out.
    pub fn metadata_about(&self, about: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut metadata = self.metadata();
        for (k, v) in about {
            if !v.is_empty() && !metadata.iter().any(|(have, _)| have == k) {
                metadata.push((k, (*v).to_owned()));
            }
        }
        metadata
    }

    /// The gRPC status, with the [`reason`](Self::reason) and the metadata (see
    /// [`metadata_about`](Self::metadata_about)) in its details.
    pub fn into_status_about(self, about: &[(&'static str, &str)]) -> tonic::Status {
        let metadata = self.metadata_about(about);
        let status = tonic::Status::new(self.grpc_code(), self.to_string());
        reason::attach(status, self.reason(), metadata)
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.into_status_about(&[])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("https://switchboard.dev/problems/{}", self.reason()),
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use switchboard_storage::StorageError;

    use super::*;

    fn info(status: &tonic::Status) -> (Option<Reason>, HashMap<String, String>) {
        (reason::reason(status), reason::error_info(status).map(|i| i.metadata).unwrap_or_default())
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_full_disk_says_no_space_about_the_topic_of_the_request() {
        let e: ApiError =
            BrokerError::from(StorageError::NoSpace { path: "/data/orders/0.log".into() }).into();
        let status = e.into_status_about(&[(key::TOPIC, "orders")]);
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(info(&status), (Some(Reason::NoSpace), map(&[(key::TOPIC, "orders")])));
    }

    #[test]
    fn what_an_error_names_wins_over_the_request() {
        let topic = switchboard_core::TopicName::new("orders").unwrap();
        let e: ApiError = BrokerError::PartitionNotFound { topic, partition: 7, partitions: 2 }.into();
        let status = e.into_status_about(&[(key::TOPIC, "other"), (key::SUBSCRIPTION, "")]);
        let expected = map(&[(key::TOPIC, "orders"), (key::PARTITION, "7")]);
        assert_eq!(info(&status), (Some(Reason::PartitionNotFound), expected));
        let e: ApiError = BrokerError::LeaseExpired("0-1-2".into()).into();
        assert_eq!(info(&e.into()), (Some(Reason::LeaseExpired), map(&[(key::RECEIPT, "0-1-2")])));
    }

    #[tokio::test]
    async fn the_problem_type_is_the_reason() {
        let resp = ApiError::MessageTooLarge("event 0: too large".into()).into_response();
        assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "https://switchboard.dev/problems/message-too-large");
    }
}
