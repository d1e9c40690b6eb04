//! gRPC request decoding: prost decodes a request message from arbitrary bytes, then the
//! server converts it as the RPC would before touching the broker (publish batches and their
//! CloudEvents, topic and subscription settings, consume receipts, seek times). Input:
//! `[message kind][protobuf bytes]` (see `switchboard_fuzz::GrpcKind`).
//!
//! Never panics; every published event it accepts is valid and comes back the same through
//! both consumer APIs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use switchboard_broker::TopicConfig;
use switchboard_fuzz::{GrpcKind, Reader, check_roundtrips};
use switchboard_proto::switchboard::v1 as api;
use switchboard_server::Limits;
use switchboard_server::fuzzing::{
    grpc_publish, grpc_receipts, grpc_subscription_config, grpc_timestamp, grpc_topic_config,
};

fn publish(request: api::PublishRequest) {
    let limits = Limits { max_message_bytes: 64 * 1024, max_batch_messages: 64, ..Limits::default() };
    let Ok((_, _, messages)) = grpc_publish(request, &limits) else { return };
    assert!(!messages.is_empty() && messages.len() <= limits.max_batch_messages);
    for m in &messages {
        m.validate(limits.max_message_bytes).expect("accepted events are valid");
        check_roundtrips(m);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader(data);
    let kind = GrpcKind::from_byte(r.u8());
    let bytes = r.rest();
    match kind {
        GrpcKind::Publish => {
            if let Ok(req) = api::PublishRequest::decode(bytes) {
                publish(req);
            }
        }
        GrpcKind::PublishStream => {
            if let Ok(api::PublishStreamRequest { batch: Some(batch), .. }) =
                api::PublishStreamRequest::decode(bytes)
            {
                publish(batch);
            }
        }
        GrpcKind::CreateTopic => {
            if let Ok(req) = api::CreateTopicRequest::decode(bytes) {
                let _ = grpc_topic_config(req.config, &TopicConfig::default());
            }
        }
        GrpcKind::CreateSubscription => {
            if let Ok(req) = api::CreateSubscriptionRequest::decode(bytes) {
                let _ = grpc_subscription_config(req.config);
            }
        }
        GrpcKind::Consume => {
            use api::consume_request::Request;
            let Ok(req) = api::ConsumeRequest::decode(bytes) else { return };
            let receipts = match req.request {
                Some(Request::Ack(a)) => a.receipts,
                Some(Request::Nack(n)) => n.receipts,
                Some(Request::Extend(e)) => e.receipts,
                _ => return,
            };
            let n = receipts.len();
            let outcomes = grpc_receipts(receipts.clone());
            assert_eq!(outcomes.len(), n);
            for (o, r) in outcomes.iter().zip(&receipts) {
                assert_eq!(&o.receipt, r);
            }
        }
        GrpcKind::Seek => {
            use api::seek_request::Target;
            if let Ok(api::SeekRequest { target: Some(Target::Time(t)), .. }) =
                api::SeekRequest::decode(bytes)
            {
                let _ = grpc_timestamp(t);
            }
        }
    }
});
