//! The message model: a superset of the CloudEvents 1.0 attributes plus opaque data.
//!
//! Validation happens in one place, [`Message::validate`], which every entry point (embedded
//! publish, gRPC, REST) calls before anything is stored.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// The CloudEvents version this model implements.
pub const SPEC_VERSION: &str = "1.0";
/// Longest `id`, `source`, `type`, `subject` and extension value accepted, in bytes.
pub const MAX_ATTRIBUTE_LEN: usize = 4096;
/// Longest extension name (CloudEvents recommends at most 20 characters).
pub const MAX_EXTENSION_NAME_LEN: usize = 20;

/// Extension carrying the key that chooses the partition and orders by key.
pub const EXT_PARTITION_KEY: &str = "partitionkey";
/// W3C trace context `traceparent` extension.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// W3C trace context `tracestate` extension.
pub const EXT_TRACESTATE: &str = "tracestate";

const RESERVED: [&str; 10] = [
    "id",
    "source",
    "type",
    "specversion",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
];

/// One event or command as published: CloudEvents attributes and data bytes.
///
/// `Message::default()` has every attribute empty, which is not a valid message: it is the
/// starting point of decoders that fill it attribute by attribute; services use
/// [`Message::new`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Identifies the event; unique per `source`. Also the idempotency key for publish.
    pub id: String,
    /// The context in which the event happened (a URI-reference).
    pub source: String,
    /// The kind of event, e.g. `com.example.order.created` (CloudEvents `type`).
    pub ty: String,
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// The subject of the event in the context of `source`.
    pub subject: Option<String>,
    /// When the event happened, RFC 3339.
    pub time: Option<String>,
    /// Media type of `data`.
    pub datacontenttype: Option<String>,
    /// Schema that `data` adheres to (URI).
    pub dataschema: Option<String>,
    /// Extension attributes, e.g. `traceparent`, `partitionkey`.
    pub extensions: BTreeMap<String, String>,
    /// The payload.
    pub data: Bytes,
}

/// Why a message was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A required attribute is empty.
    #[error("attribute `{0}` is required and must not be empty")]
    Missing(&'static str),
    /// An attribute is longer than [`MAX_ATTRIBUTE_LEN`].
    #[error("attribute `{name}` is {len} bytes long; the limit is {MAX_ATTRIBUTE_LEN}")]
    AttributeTooLong {
        /// The attribute.
        name: String,
        /// Its length.
        len: usize,
    },
    /// An attribute value holds a control character.
    #[error("attribute `{0}` contains a control character")]
    ControlCharacter(String),
    /// `specversion` is not 1.0.
    #[error("specversion {0:?} is not supported; use \"1.0\"")]
    SpecVersion(String),
    /// `time` is not an RFC 3339 timestamp.
    #[error("time {0:?} is not an RFC 3339 timestamp such as 2026-11-26T10:00:00Z")]
    Time(String),
    /// An extension name breaks the CloudEvents naming rules.
    #[error(
        "extension name {0:?} is invalid: use 1 to 20 lowercase ASCII letters or digits, not a reserved attribute name"
    )]
    ExtensionName(String),
    /// The message is larger than the topic allows.
    #[error("message is {size} bytes; the limit is {max} bytes")]
    TooLarge {
        /// Encoded size of the message.
        size: usize,
        /// The limit that applies.
        max: usize,
    },
}

impl Message {
    /// A message with a fresh unique id, the given source and type, and `data`.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: impl Into<Bytes>) -> Message {
        Message {
            id: new_message_id(),
            source: source.into(),
            ty: ty.into(),
            specversion: SPEC_VERSION.to_owned(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: BTreeMap::new(),
            data: data.into(),
        }
    }

    /// Sets the id (the idempotency key).
    pub fn with_id(mut self, id: impl Into<String>) -> Message {
        self.id = id.into();
        self
    }

    /// Sets the partition key, which picks the partition and orders by key.
    pub fn with_key(self, key: impl Into<String>) -> Message {
        self.with_extension(EXT_PARTITION_KEY, key)
    }

    /// Sets the subject.
    pub fn with_subject(mut self, subject: impl Into<String>) -> Message {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the data content type.
    pub fn with_content_type(mut self, ct: impl Into<String>) -> Message {
        self.datacontenttype = Some(ct.into());
        self
    }

    /// Sets an extension attribute.
    pub fn with_extension(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.extensions.insert(name.into(), value.into());
        self
    }

    /// The partition key, if any.
    pub fn partition_key(&self) -> Option<&str> {
        self.extensions.get(EXT_PARTITION_KEY).map(String::as_str)
    }

    /// Bytes the message occupies: data plus every attribute name and value. This is what the
    /// size limit applies to.
    pub fn size(&self) -> usize {
        let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
        self.data.len()
            + self.id.len()
            + self.source.len()
            + self.ty.len()
            + self.specversion.len()
            + opt(&self.subject)
            + opt(&self.time)
            + opt(&self.datacontenttype)
            + opt(&self.dataschema)
            + self.extensions.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Checks every attribute and the size against `max_size` bytes.
    ///
    /// # Errors
    /// The first rule the message breaks.
    pub fn validate(&self, max_size: usize) -> Result<(), MessageError> {
        required("id", &self.id)?;
        required("source", &self.source)?;
        required("type", &self.ty)?;
        if self.specversion != SPEC_VERSION {
            return Err(MessageError::SpecVersion(self.specversion.clone()));
        }
        for (name, value) in [
            ("subject", &self.subject),
            ("time", &self.time),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ] {
            if let Some(v) = value {
                attribute(name, v)?;
            }
        }
        if let Some(t) = &self.time
            && !is_rfc3339(t)
        {
            return Err(MessageError::Time(t.clone()));
        }
        for (name, value) in &self.extensions {
            if !is_extension_name(name) {
                return Err(MessageError::ExtensionName(name.clone()));
            }
            attribute(name, value)?;
        }
        let size = self.size();
        if size > max_size {
            return Err(MessageError::TooLarge { size, max: max_size });
        }
        Ok(())
    }
}

fn required(name: &'static str, v: &str) -> Result<(), MessageError> {
    if v.is_empty() {
        return Err(MessageError::Missing(name));
    }
    attribute(name, v)
}

fn attribute(name: &str, v: &str) -> Result<(), MessageError> {
    if v.len() > MAX_ATTRIBUTE_LEN {
        return Err(MessageError::AttributeTooLong { name: name.to_owned(), len: v.len() });
    }
    if v.chars().any(char::is_control) {
        return Err(MessageError::ControlCharacter(name.to_owned()));
    }
    Ok(())
}

/// Whether `name` is a valid CloudEvents extension attribute name that is not reserved.
pub fn is_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EXTENSION_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !RESERVED.contains(&name)
}

/// Whether `s` is an RFC 3339 date-time, `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with every
/// field in its range (a day its month has, no leap second): exactly what
/// [`Timestamp::parse_rfc3339`](crate::Timestamp::parse_rfc3339) reads, at any year.
pub fn is_rfc3339(s: &str) -> bool {
    crate::rfc3339::is_valid(s)
}

/// A new message id: 32 hex digits, time-ordered, unique within and across processes with
/// overwhelming probability.
pub fn new_message_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let low = RandomState::new().hash_one((seed, n)) ^ n;
    format!("{nanos:016x}{low:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message::new("/orders", "order.created", &b"{}"[..])
    }

    #[test]
    fn a_plain_message_is_valid() {
        let m = msg().with_key("k1").with_extension("traceparent", "00-abc-def-01");
        m.validate(1024).unwrap();
        assert_eq!(m.partition_key(), Some("k1"));
    }

    #[test]
    fn each_broken_rule_has_its_own_error() {
        assert_eq!(msg().with_id("").validate(1024), Err(MessageError::Missing("id")));
        let mut m = msg();
        m.source.clear();
        assert_eq!(m.validate(1024), Err(MessageError::Missing("source")));
        let mut m = msg();
        m.specversion = "0.3".into();
        assert!(matches!(m.validate(1024), Err(MessageError::SpecVersion(_))));
        let mut m = msg();
        m.time = Some("yesterday".into());
        assert!(matches!(m.validate(1024), Err(MessageError::Time(_))));
        assert!(matches!(
            msg().with_extension("Trace-Parent", "x").validate(1024),
            Err(MessageError::ExtensionName(_))
        ));
        assert!(matches!(
            msg().with_extension("data", "x").validate(1024),
            Err(MessageError::ExtensionName(_))
        ));
        assert!(matches!(msg().with_subject("a\nb").validate(1024), Err(MessageError::ControlCharacter(_))));
        assert!(matches!(
            msg().with_id("x".repeat(MAX_ATTRIBUTE_LEN + 1)).validate(usize::MAX),
            Err(MessageError::AttributeTooLong { .. })
        ));
        let big = Message::new("s", "t", vec![0u8; 2000]);
        assert!(matches!(big.validate(1024), Err(MessageError::TooLarge { max: 1024, .. })));
    }

    #[test]
    fn rfc3339_shapes() {
        for ok in ["2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123456789+01:00", "1985-04-12t23:20:50.52z"] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in ["2026-11-26", "2026-13-01T00:00:00Z", "2026-11-26T10:00:00", "2026-11-26T10:00:00.Z", "x"]
        {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..10_000).map(|_| new_message_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
