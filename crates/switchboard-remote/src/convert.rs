//! Messages as CloudEvents and back, and the SDK's subscription settings as `switchboard.v1`
//! ones.
//!
//! The CloudEvent mapping itself is `switchboard-proto`'s, the one the server uses, so a
//! message comes back from the server as it was published. What is the remote backend's own:
//! `time` goes out as the string it is, and deliveries are taken as the server sent them.

use switchboard_core::contract::{Mode, Start, SubscriptionSpec, SubscriptionStats};
use switchboard_core::{Message, Timestamp};
use switchboard_proto::io::cloudevents::v1 as ce;
use switchboard_proto::switchboard::v1 as api;
use switchboard_proto::{event, timestamp};

use ce::cloud_event::CloudEventAttributeValue;
use ce::cloud_event::cloud_event_attribute_value::Attr;

/// Milliseconds since the epoch as a protobuf timestamp.
pub(crate) fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    timestamp::to_proto(t)
}

/// A protobuf timestamp as milliseconds since the epoch (before 1970: 0, as a server never
/// sends one).
pub(crate) fn timestamp_from_proto(t: prost_types::Timestamp) -> Timestamp {
    timestamp::from_proto(t).unwrap_or(Timestamp(0))
}

/// A message as a CloudEvent. `time` goes as the string it is, not as the `ce_timestamp` the
/// shared mapping makes of it: the server checks and stores the string unchanged, so an
/// offset or a precision that a protobuf timestamp would normalize away survives.
pub(crate) fn event_from_message(m: Message) -> ce::CloudEvent {
    let time = m.time.clone();
    let mut e = ce::CloudEvent::from(m);
    if let Some(t) = time {
        e.attributes.insert("time".to_owned(), CloudEventAttributeValue { attr: Some(Attr::CeString(t)) });
    }
    e
}

/// A delivered CloudEvent as a message. The server validated it when it was published, so
/// nothing is checked again here.
pub(crate) fn message_from_event(event: ce::CloudEvent) -> Message {
    event::message_from_trusted(event)
}

/// The server-side settings of a subscription opened with `spec`. The prefetch becomes the
/// per-consumer in-flight cap, so the server enforces the same back-pressure as the credits.
pub(crate) fn subscription_config(spec: &SubscriptionSpec) -> api::SubscriptionConfig {
    let queue = spec.mode == Mode::Queue;
    api::SubscriptionConfig {
        mode: match spec.mode {
            Mode::Queue => api::SubscriptionMode::Queue,
            Mode::Stream => api::SubscriptionMode::Stream,
        } as i32,
        start: match spec.start {
            Start::Earliest => api::StartPosition::Earliest,
            Start::Latest => api::StartPosition::Latest,
        } as i32,
        lease_ms: Some(u64::try_from(spec.lease.as_millis()).unwrap_or(u64::MAX)),
        // 0 means "never dead-letter" on the wire.
        max_deliveries: Some(if queue { spec.max_deliveries.unwrap_or(0) } else { 0 }),
        dead_letter_topic: if queue {
            spec.dead_letter_topic.as_ref().map(ToString::to_string)
        } else {
            None
        },
        ordered_by_key: spec.ordered_by_key,
        max_in_flight_per_consumer: Some(spec.prefetch),
    }
}

/// The server's counts in the contract's shape.
pub(crate) fn stats_from_proto(s: api::SubscriptionStats) -> SubscriptionStats {
    let queue = s.mode == api::SubscriptionMode::Queue as i32;
    SubscriptionStats::new(s.backlog, s.in_flight, s.lag).with_dead_lettered(queue.then_some(s.dead_lettered))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ce::cloud_event::Data;

    use super::*;

    #[test]
    fn a_message_survives_the_trip() {
        let mut m = Message::new("/shop", "order.created", r#"{"n":1}"#)
            .with_subject("o-1")
            .with_content_type("application/json")
            .with_key("c-7")
            .with_extension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        m.time = Some("2026-11-26T10:00:00.5+01:00".into());
        m.dataschema = Some("https://x/schema".into());
        let e = event_from_message(m.clone());
        assert_eq!(e.attributes["time"].attr, Some(Attr::CeString("2026-11-26T10:00:00.5+01:00".into())));
        assert_eq!(e.data, Some(Data::TextData(r#"{"n":1}"#.into())));
        assert_eq!(message_from_event(e), m);

        let bin = Message::new("/s", "t", vec![0xff, 0]);
        assert_eq!(message_from_event(event_from_message(bin.clone())), bin);
        let mut proto = Message::new("/s", "t", vec![8, 1]).with_content_type("application/protobuf");
        proto.dataschema = Some("type.x/a.B".into());
        let e = event_from_message(proto.clone());
        assert!(matches!(e.data, Some(Data::ProtoData(_))));
        assert_eq!(message_from_event(e), proto);
    }

    #[test]
    fn typed_attributes_arrive_as_canonical_strings() {
        let mut e = event_from_message(Message::new("/s", "t", ""));
        let mut put = |k: &str, a| e.attributes.insert(k.into(), CloudEventAttributeValue { attr: Some(a) });
        put("urgent", Attr::CeBoolean(true));
        put("blob", Attr::CeBytes(Bytes::from_static(b"\x00\x01")));
        put("time", Attr::CeTimestamp(prost_types::Timestamp { seconds: 1_764_151_200, nanos: 500_000_000 }));
        let m = message_from_event(e);
        assert_eq!(m.extensions["urgent"], "true");
        assert_eq!(m.extensions["blob"], "AAE=");
        assert_eq!(m.time.as_deref(), Some("2025-11-26T10:00:00.500Z"));
    }

    #[test]
    fn timestamps() {
        let t = Timestamp(2007);
        assert_eq!(timestamp_from_proto(timestamp_to_proto(t)), t);
    }
}
