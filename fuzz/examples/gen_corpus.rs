//! Writes the seed corpora, `corpus/<target>/seed-*`: a few small valid inputs per target,
//! made with the project's own encoders so that they stay valid when a format changes.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use switchboard_core::{ManualClock, Timestamp};
use switchboard_fuzz::{
    DECODE_RESEAL, FileKind, GrpcKind, HttpInput, RECOVERY_RESEAL_INDEXES, RECOVERY_RESEAL_LOGS,
    RECOVERY_SMALL, RecoveryFile, RecoveryInput, storage_decode_input,
};
use switchboard_proto::io::cloudevents::v1::CloudEvent;
use switchboard_proto::io::cloudevents::v1::cloud_event::cloud_event_attribute_value::Attr;
use switchboard_proto::io::cloudevents::v1::cloud_event::{CloudEventAttributeValue, Data};
use switchboard_proto::switchboard::v1 as api;
use switchboard_storage::fuzzing::encode_batch;
use switchboard_storage::{FsyncPolicy, Log, LogConfig, MemStorage, Storage};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in [
        ("storage_decode", storage_decode()),
        ("storage_recovery", storage_recovery()),
        ("cloudevents_http", cloudevents_http()),
        ("grpc_request", grpc_request()),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            let path = dir.join(format!("seed-{name}"));
            std::fs::write(&path, &bytes)?;
            println!("{} ({} bytes)", path.display(), bytes.len());
        }
    }
    Ok(())
}

fn payloads(n: usize, tag: &str) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{tag}-{i}"))).collect()
}

fn storage_decode() -> Seeds {
    let mut segment = encode_batch(&payloads(3, "a"), 0, 1_000);
    segment.extend(encode_batch(&[Bytes::new()], 3, 1_001));
    segment.extend(encode_batch(&payloads(2, "b"), 4, 1_001));
    let mut torn = segment.clone();
    torn.extend_from_slice(&encode_batch(&payloads(2, "c"), 6, 1_002)[..20]);
    let mut bad_crc = segment.clone();
    bad_crc[40] ^= 1;
    let high = encode_batch(&payloads(2, "d"), u64::MAX - 2, 7);
    vec![
        ("batches", storage_decode_input(0, 0, &segment)),
        ("torn-tail", storage_decode_input(0, 0, &torn)),
        ("reseal", storage_decode_input(DECODE_RESEAL, 0, &bad_crc)),
        ("high-base", storage_decode_input(0, u64::MAX - 2, &high)),
    ]
}

/// The files of a real log with sealed segments (and their indexes) and an active one.
fn real_log_files() -> Vec<RecoveryFile> {
    let storage = MemStorage::new();
    let dir = Path::new("/seed");
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        segment_max_bytes: 256,
        index_interval_bytes: 64,
        ..LogConfig::default()
    };
    let clock = ManualClock::new(Timestamp(1_000));
    let log = Log::open(Arc::new(storage.clone()), dir, config, Arc::new(clock.clone())).expect("open");
    for i in 0..8 {
        clock.set(Timestamp(1_000 + i * 10));
        log.append_unsynced(&payloads(1 + i as usize % 3, &format!("r{i}"))).expect("append");
    }
    log.roll().expect("roll");
    log.append_unsynced(&payloads(2, "last")).expect("append");
    drop(log);
    let mut files: Vec<RecoveryFile> = storage
        .paths()
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            let (stem, ext) = name.split_once('.')?;
            let kind = HashMap::from([
                ("log", FileKind::Log),
                ("index", FileKind::Index),
                ("timeindex", FileKind::TimeIndex),
            ])
            .get(ext)
            .copied()?;
            let data = storage.read_file(&p).ok()?;
            Some(RecoveryFile { kind, base: stem.parse().ok()?, data })
        })
        .collect();
    files.sort_by_key(|f| (f.base, f.kind.to_byte()));
    files
}

fn storage_recovery() -> Seeds {
    let files = real_log_files();
    let input = |flags, files: Vec<RecoveryFile>| {
        RecoveryInput { flags, clock_ms: 2_000, lookup_ms: 1_030, append: b"appended".to_vec(), files }
            .encode()
    };
    let mut torn = files.clone();
    if let Some(last) = torn.iter_mut().rev().find(|f| f.kind == FileKind::Log) {
        let keep = last.data.len() - 5;
        last.data.truncate(keep);
    }
    let no_indexes: Vec<RecoveryFile> = files.iter().filter(|f| f.kind == FileKind::Log).cloned().collect();
    let mut leftover = no_indexes.clone();
    leftover.push(RecoveryFile { kind: FileKind::Tmp, base: 0, data: b"half".to_vec() });
    let high = vec![RecoveryFile {
        kind: FileKind::Log,
        base: u64::MAX - 3,
        data: encode_batch(&payloads(2, "h"), u64::MAX - 3, 5),
    }];
    vec![
        ("log", input(RECOVERY_SMALL, files.clone())),
        ("log-reseal", input(RECOVERY_SMALL | RECOVERY_RESEAL_LOGS | RECOVERY_RESEAL_INDEXES, files)),
        ("torn", input(RECOVERY_SMALL, torn)),
        ("no-indexes", input(0, no_indexes)),
        ("leftover-tmp", input(0, leftover)),
        ("high-base", input(0, high)),
    ]
}

fn cloudevents_http() -> Seeds {
    let binary = HttpInput {
        query_deliver_at: None,
        content_type: Some(b"application/json"),
        headers: vec![
            (b"ce-specversion", b"1.0"),
            (b"ce-id", b"e-1"),
            (b"ce-source", b"/shop"),
            (b"ce-type", b"order.created"),
            (b"ce-subject", b"caf%C3%A9"),
            (b"ce-time", b"2026-01-02T03:04:05.678Z"),
            (b"ce-partitionkey", b"customer-7"),
        ],
        body: br#"{"order": 1, "items": [1.5, "x", null, true]}"#,
    };
    let binary_bytes = HttpInput {
        content_type: Some(b"application/octet-stream"),
        headers: binary.headers[..4].to_vec(),
        body: b"\x00\x01\xff",
        query_deliver_at: Some(b"1767225600000"),
    };
    let structured_body = br#"{"specversion":"1.0","id":"e-2","source":"/shop","type":"t","datacontenttype":"text/plain","data":"hello","n":3,"ok":true}"#;
    let structured = HttpInput {
        content_type: Some(b"application/cloudevents+json; charset=utf-8"),
        headers: vec![(b"switchboard-deliver-at", b"2026-01-01T00:00:00Z")],
        body: structured_body,
        query_deliver_at: None,
    };
    let batch_body = br#"[{"specversion":"1.0","id":"e-3","source":"/s","type":"t","data":{"a":[1,2]}},{"specversion":"1.0","id":"e-4","source":"/s","type":"t","data_base64":"AP8="}]"#;
    let batch = HttpInput {
        content_type: Some(b"application/cloudevents-batch+json"),
        headers: vec![],
        body: batch_body,
        query_deliver_at: None,
    };
    // Regression: JSON-typed data that is not JSON came back to REST consumers changed.
    let text_json = HttpInput {
        content_type: Some(b"text/json"),
        headers: binary.headers[..4].to_vec(),
        body: b"hello",
        query_deliver_at: None,
    };
    vec![
        ("binary-json", binary.encode()),
        ("binary-text-json", text_json.encode()),
        ("binary-bytes", binary_bytes.encode()),
        ("structured", structured.encode()),
        ("batch", batch.encode()),
    ]
}

fn event(id: &str) -> CloudEvent {
    let attr = |a| CloudEventAttributeValue { attr: Some(a) };
    let mut attributes = HashMap::new();
    attributes.insert("subject".to_owned(), attr(Attr::CeString("o-1".into())));
    attributes.insert("datacontenttype".to_owned(), attr(Attr::CeString("application/json".into())));
    attributes.insert(
        "time".to_owned(),
        attr(Attr::CeTimestamp(prost_types::Timestamp { seconds: 1_764_151_200, nanos: 500_000_000 })),
    );
    attributes.insert("priority".to_owned(), attr(Attr::CeInteger(-3)));
    attributes.insert("urgent".to_owned(), attr(Attr::CeBoolean(true)));
    attributes.insert("blob".to_owned(), attr(Attr::CeBytes(Bytes::from_static(b"\x00\x01"))));
    CloudEvent {
        id: id.into(),
        source: "/shop".into(),
        spec_version: "1.0".into(),
        r#type: "order.created".into(),
        attributes,
        data: Some(Data::TextData(r#"{"n":1}"#.into())),
    }
}

fn grpc_request() -> Seeds {
    let mut proto_event = event("e-2");
    proto_event.data =
        Some(Data::ProtoData(prost_types::Any { type_url: "type.x/a.B".into(), value: vec![8, 1] }));
    let mut binary_event = event("e-3");
    binary_event.attributes.clear();
    binary_event.data = Some(Data::BinaryData(Bytes::from_static(b"\x00\xff")));
    let publish = api::PublishRequest {
        topic: "orders".into(),
        events: vec![event("e-1"), proto_event, binary_event],
        deliver_at: Some(prost_types::Timestamp { seconds: 1_767_225_600, nanos: 0 }),
    };
    let stream = api::PublishStreamRequest { sequence: 7, batch: Some(publish.clone()) };
    let topic = api::CreateTopicRequest {
        name: "orders".into(),
        config: Some(api::TopicConfig {
            partitions: Some(4),
            fsync: api::FsyncPolicy::Interval as i32,
            fsync_interval_ms: Some(200),
            retention_max_age_ms: Some(86_400_000),
            max_message_bytes: Some(65_536),
            ..api::TopicConfig::default()
        }),
    };
    let subscription = api::CreateSubscriptionRequest {
        topic: "orders".into(),
        name: "billing".into(),
        config: Some(api::SubscriptionConfig {
            mode: api::SubscriptionMode::Queue as i32,
            lease_ms: Some(30_000),
            max_deliveries: Some(5),
            dead_letter_topic: Some("orders.dlq".into()),
            ..api::SubscriptionConfig::default()
        }),
    };
    let ack = api::ConsumeRequest {
        request_id: 1,
        request: Some(api::consume_request::Request::Ack(api::consume_request::Ack {
            receipts: vec!["0.12.345".into(), "bad".into()],
        })),
    };
    let seek = api::SeekRequest {
        topic: "orders".into(),
        subscription: "billing".into(),
        target: Some(api::seek_request::Target::Time(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        })),
    };
    vec![
        ("publish", GrpcKind::Publish.input(&publish)),
        ("publish-stream", GrpcKind::PublishStream.input(&stream)),
        ("create-topic", GrpcKind::CreateTopic.input(&topic)),
        ("create-subscription", GrpcKind::CreateSubscription.input(&subscription)),
        ("consume-ack", GrpcKind::Consume.input(&ack)),
        ("seek-time", GrpcKind::Seek.input(&seek)),
    ]
}
