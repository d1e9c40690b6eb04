//! Input formats of the fuzz targets, shared by the targets and by the seed generator
//! (`examples/gen_corpus.rs`), so that seeds and targets cannot drift apart.
//!
//! The formats are byte-oriented and forgiving: every input means something, and a short or
//! truncated input just means less.

/// Reads fields off the front of an input; running out yields zeros / empty slices.
pub struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    /// The next byte, or 0.
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// The next little-endian `u16` (missing bytes are zeros).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian `u64` (missing bytes are zeros).
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// The next `n` bytes, or what is left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// storage_decode: [flags u8][base offset u64 LE][segment bytes...]

/// `storage_decode` flag: recompute the batch checksums before decoding.
pub const DECODE_RESEAL: u8 = 1;

/// Encodes a `storage_decode` input.
pub fn storage_decode_input(flags: u8, base_offset: u64, segment: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&base_offset.to_le_bytes());
    v.extend_from_slice(segment);
    v
}

// ---------------------------------------------------------------------------------------------
// storage_recovery:
//   [flags u8][clock ms u64 LE][lookup time u64 LE][append payload len u8][payload]
//   then files: [kind u8][base selector u8][len u16 LE][data]...

/// `storage_recovery` flag: recompute the checksums of every `.log` file.
pub const RECOVERY_RESEAL_LOGS: u8 = 1;
/// `storage_recovery` flag: recompute the checksums of every index file.
pub const RECOVERY_RESEAL_INDEXES: u8 = 2;
/// `storage_recovery` flag: small segments (rolls) and a dense index.
pub const RECOVERY_SMALL: u8 = 4;
/// `storage_recovery` flag: fsync policy `always` instead of `never`.
pub const RECOVERY_FSYNC_ALWAYS: u8 = 8;

/// Which file of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `.log`
    Log,
    /// `.index`
    Index,
    /// `.timeindex`
    TimeIndex,
    /// `.log.tmp` (a leftover that recovery removes)
    Tmp,
}

impl FileKind {
    /// From the input byte.
    pub fn from_byte(b: u8) -> FileKind {
        match b % 4 {
            0 => FileKind::Log,
            1 => FileKind::Index,
            2 => FileKind::TimeIndex,
            _ => FileKind::Tmp,
        }
    }

    /// To the input byte.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The file name extension.
    pub fn ext(self) -> &'static str {
        match self {
            FileKind::Log => "log",
            FileKind::Index => "index",
            FileKind::TimeIndex => "timeindex",
            FileKind::Tmp => "log.tmp",
        }
    }
}

/// A segment base offset from its input byte: `0..=127` are themselves, `128..=255` are the
/// 128 largest `u64`s (where offset arithmetic can overflow).
pub fn base_from_selector(b: u8) -> u64 {
    if b < 128 { u64::from(b) } else { u64::MAX - u64::from(b - 128) }
}

/// The selector byte of `base` (only bases [`base_from_selector`] can produce).
pub fn selector_of_base(base: u64) -> Option<u8> {
    if base < 128 {
        Some(base as u8)
    } else if u64::MAX - base < 128 {
        Some(128 + (u64::MAX - base) as u8)
    } else {
        None
    }
}

/// One file of a `storage_recovery` input.
#[derive(Clone, Debug)]
pub struct RecoveryFile {
    /// Which file.
    pub kind: FileKind,
    /// Its segment's base offset.
    pub base: u64,
    /// Its bytes (at most `u16::MAX`).
    pub data: Vec<u8>,
}

/// A whole `storage_recovery` input.
#[derive(Clone, Debug, Default)]
pub struct RecoveryInput {
    /// `RECOVERY_*` flags.
    pub flags: u8,
    /// The clock, ms since the epoch.
    pub clock_ms: u64,
    /// A time to look up with `offset_for_time`.
    pub lookup_ms: u64,
    /// A record to append after recovery.
    pub append: Vec<u8>,
    /// The files of the log directory.
    pub files: Vec<RecoveryFile>,
}

impl RecoveryInput {
    /// Decodes an input (never fails).
    pub fn decode(data: &[u8]) -> RecoveryInput {
        let mut r = Reader(data);
        let flags = r.u8();
        let clock_ms = r.u64();
        let lookup_ms = r.u64();
        let n = r.u8() as usize;
        let append = r.bytes(n).to_vec();
        let mut files = Vec::new();
        while !r.is_empty() && files.len() < 16 {
            let kind = FileKind::from_byte(r.u8());
            let base = base_from_selector(r.u8());
            let len = r.u16() as usize;
            files.push(RecoveryFile { kind, base, data: r.bytes(len).to_vec() });
        }
        RecoveryInput { flags, clock_ms, lookup_ms, append, files }
    }

    /// Encodes an input.
    ///
    /// # Panics
    /// If a base has no selector, a file is longer than `u16::MAX` or the append payload
    /// longer than 255 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.flags];
        v.extend_from_slice(&self.clock_ms.to_le_bytes());
        v.extend_from_slice(&self.lookup_ms.to_le_bytes());
        v.push(u8::try_from(self.append.len()).expect("append payload of at most 255 bytes"));
        v.extend_from_slice(&self.append);
        for f in &self.files {
            v.push(f.kind.to_byte());
            v.push(selector_of_base(f.base).expect("a base the format can express"));
            v.extend_from_slice(&u16::try_from(f.data.len()).expect("a small file").to_le_bytes());
            v.extend_from_slice(&f.data);
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// cloudevents_http: an HTTP-like request
//
//   content-type: application/cloudevents+json
//   ce-id: 1
//   ?deliver_at: 2026-01-01T00:00:00Z
//
//   <body>
//
// Header lines up to the first empty line, then the body. The first `content-type` line is
// the Content-Type; `?deliver_at` is the query parameter; any other line is a header, sent
// as is (a line without `:` is a header with an empty value).

/// A decoded `cloudevents_http` input.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpInput<'a> {
    /// The `deliver_at` query parameter.
    pub query_deliver_at: Option<&'a [u8]>,
    /// The Content-Type header.
    pub content_type: Option<&'a [u8]>,
    /// The other headers, in order.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> HttpInput<'a> {
    /// Decodes an input (never fails).
    pub fn decode(data: &'a [u8]) -> HttpInput<'a> {
        let mut input = HttpInput::default();
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        input.body = body;
        for line in head.split(|&b| b == b'\n') {
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (line, &[][..]),
            };
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if name == b"?deliver_at" {
                input.query_deliver_at = Some(value);
            } else if name.eq_ignore_ascii_case(b"content-type") && input.content_type.is_none() {
                input.content_type = Some(value);
            } else {
                input.headers.push((name, value));
            }
        }
        input
    }

    /// Encodes an input.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some(q) = self.query_deliver_at {
            v.extend_from_slice(b"?deliver_at: ");
            v.extend_from_slice(q);
            v.push(b'\n');
        }
        if let Some(c) = self.content_type {
            v.extend_from_slice(b"content-type: ");
            v.extend_from_slice(c);
            v.push(b'\n');
        }
        for (name, value) in &self.headers {
            v.extend_from_slice(name);
            v.extend_from_slice(b": ");
            v.extend_from_slice(value);
            v.push(b'\n');
        }
        v.push(b'\n');
        v.extend_from_slice(self.body);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// grpc_request: [message kind u8][protobuf bytes...]

/// Which request message a `grpc_request` input holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcKind {
    /// `PublishRequest`
    Publish,
    /// `PublishStreamRequest`
    PublishStream,
    /// `CreateTopicRequest`
    CreateTopic,
    /// `CreateSubscriptionRequest`
    CreateSubscription,
    /// `ConsumeRequest`
    Consume,
    /// `SeekRequest`
    Seek,
}

impl GrpcKind {
    /// Every kind.
    pub const ALL: [GrpcKind; 6] = [
        GrpcKind::Publish,
        GrpcKind::PublishStream,
        GrpcKind::CreateTopic,
        GrpcKind::CreateSubscription,
        GrpcKind::Consume,
        GrpcKind::Seek,
    ];

    /// From the input byte.
    pub fn from_byte(b: u8) -> GrpcKind {
        GrpcKind::ALL[b as usize % GrpcKind::ALL.len()]
    }

    /// An input holding `message` encoded as this kind.
    pub fn input(self, message: &impl prost::Message) -> Vec<u8> {
        let mut v = vec![self as u8];
        v.extend_from_slice(&message.encode_to_vec());
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks

use switchboard_core::Message;
use switchboard_proto::io::cloudevents::v1::CloudEvent;
use switchboard_proto::switchboard::v1::PublishRequest;
use switchboard_server::Limits;
use switchboard_server::fuzzing::{grpc_event, grpc_publish, rest_event, rest_publish};

/// Limits that a message that was accepted once cannot exceed on its way back.
fn unlimited() -> Limits {
    Limits { max_message_bytes: usize::MAX, ..Limits::default() }
}

/// Asserts that an accepted message comes back the same through both ways a consumer gets
/// it and a producer sends it again: REST's structured JSON event and gRPC's protobuf event.
///
/// # Panics
/// When it does not.
pub fn check_roundtrips(m: &Message) {
    // REST: the structured event a consumer receives, published again.
    let json = serde_json::to_vec(&rest_event(m)).expect("an event serializes");
    let again = rest_publish(None, Some(b"application/cloudevents+json"), &[], &json, &unlimited());
    let again = match again {
        Ok((_, mut v)) if v.len() == 1 => v.remove(0),
        other => {
            panic!("REST event {} of {m:?} does not publish again: {other:?}", String::from_utf8_lossy(&json))
        }
    };
    assert_same(m, &again, "REST");

    // gRPC: the protobuf event a consumer receives, over the wire, published again.
    let wire = prost::Message::encode_to_vec(&grpc_event(m.clone()));
    let event = <CloudEvent as prost::Message>::decode(&wire[..]).expect("an encoded event decodes");
    let request = PublishRequest { topic: "t".into(), events: vec![event], deliver_at: None };
    let again = match grpc_publish(request, &unlimited()) {
        Ok((_, _, mut v)) if v.len() == 1 => v.remove(0),
        other => panic!("gRPC event of {m:?} does not publish again: {other:?}"),
    };
    assert_same(m, &again, "gRPC");
}

/// Equal messages, except that the time may be normalized and JSON data re-serialized.
fn assert_same(m: &Message, again: &Message, via: &str) {
    let key = |m: &Message| {
        (
            m.id.clone(),
            m.source.clone(),
            m.ty.clone(),
            m.specversion.clone(),
            m.subject.clone(),
            m.datacontenttype.clone(),
            m.dataschema.clone(),
            m.extensions.clone(),
        )
    };
    assert_eq!(key(m), key(again), "attributes change through {via}");
    let instant = |t: &str| t.parse::<prost_types::Timestamp>().ok();
    match (&m.time, &again.time) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            assert!(
                a == b || (instant(a).is_some() && instant(a) == instant(b)),
                "time {a:?} became {b:?} through {via}"
            );
        }
        (a, b) => panic!("time {a:?} became {b:?} through {via}"),
    }
    if m.data != again.data {
        let json = |d: &[u8]| serde_json::from_slice::<serde_json::Value>(d).ok();
        assert!(
            json(&m.data).is_some() && json(&m.data) == json(&again.data),
            "data {:?} became {:?} through {via} (datacontenttype {:?})",
            String::from_utf8_lossy(&m.data),
            String::from_utf8_lossy(&again.data),
            m.datacontenttype
        );
    }
}
