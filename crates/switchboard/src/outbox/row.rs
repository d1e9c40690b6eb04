//! An outbox row: a message and its topic as columns, so an operator can read the table
//! with plain SQL; the extensions are one JSON object.

use std::collections::BTreeMap;

use bytes::Bytes;
use switchboard_core::{Message, TopicName, fnv1a_64};

use super::LANES;

/// The id of an outbox row (its position in commit order within a partition key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxRowId(pub i64);

impl std::fmt::Display for OutboxRowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A row whose publish failed for good.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedRow {
    /// The row.
    pub id: OutboxRowId,
    /// Where it was going (as stored: the name may no longer be a topic).
    pub topic: String,
    /// The message's id.
    pub message_id: String,
    /// Publish attempts so far.
    pub attempts: u32,
    /// The error that parked it.
    pub error: String,
}

/// A message on its way into the table.
#[derive(Debug)]
pub struct NewRow {
    pub(crate) lane: i32,
    pub(crate) key: Option<String>,
    /// For PostgreSQL's per-key advisory lock, which makes id order commit order per key.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) key_lock: Option<i32>,
    pub(crate) topic: String,
    pub(crate) message: Message,
    pub(crate) extensions: String,
    pub(crate) enqueued_at: i64,
}

impl NewRow {
    pub(crate) fn new(topic: &TopicName, message: Message, now: i64) -> NewRow {
        let key = message.partition_key().map(str::to_owned);
        // A keyless row only needs a lane to spread the work; its id spreads it evenly.
        let hashed = fnv1a_64(key.as_deref().unwrap_or(&message.id).as_bytes());
        let lane = i32::try_from(hashed % u64::from(LANES)).unwrap_or(0);
        // The lock needs 32 bits: fold the hash (a collision only makes two keys wait for each
        // other's commits).
        let key_lock = key.as_ref().map(|_| (hashed ^ (hashed >> 32)) as u32 as i32);
        let extensions = encode_extensions(&message.extensions);
        NewRow {
            lane,
            key,
            key_lock,
            topic: topic.as_str().to_owned(),
            message,
            extensions,
            enqueued_at: now,
        }
    }
}

/// Binds a [`NewRow`]'s columns, in the order both dialects' inserts list them (`lane`
/// through `enqueued_at`), to the query `$query`.
macro_rules! bind_new_row {
    ($query:expr, $row:expr) => {{
        let row = $row;
        let m = &row.message;
        $query
            .bind(row.lane)
            .bind(row.key.as_deref())
            .bind(&row.topic)
            .bind(&m.id)
            .bind(&m.source)
            .bind(&m.ty)
            .bind(m.subject.as_deref())
            .bind(m.time.as_deref())
            .bind(m.datacontenttype.as_deref())
            .bind(m.dataschema.as_deref())
            .bind(&row.extensions)
            .bind(m.data.as_ref())
            .bind(row.enqueued_at)
    }};
}
pub(crate) use bind_new_row;

/// A pending row as a relay reads it.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) id: i64,
    pub(crate) key: Option<String>,
    pub(crate) topic: String,
    pub(crate) message: Message,
    pub(crate) attempts: u32,
    pub(crate) next_attempt_at: i64,
    pub(crate) enqueued_at: i64,
}

/// The columns a relay selects, in the order [`raw_row`] reads them (both dialects); a
/// macro so the dialects can `concat!` it into their queries.
macro_rules! row_columns {
    () => {
        "id, partition_key, topic, message_id, source, ty, subject, time, datacontenttype, dataschema, \
         extensions, data, attempts, next_attempt_at, enqueued_at"
    };
}
pub(crate) use row_columns;

/// Reads the [`row_columns!`] of a result row.
pub(crate) fn raw_row<R>(r: &R) -> Result<RawRow, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Vec<u8>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RawRow {
        id: r.try_get(0)?,
        key: r.try_get(1)?,
        topic: r.try_get(2)?,
        message_id: r.try_get(3)?,
        source: r.try_get(4)?,
        ty: r.try_get(5)?,
        subject: r.try_get(6)?,
        time: r.try_get(7)?,
        datacontenttype: r.try_get(8)?,
        dataschema: r.try_get(9)?,
        extensions: r.try_get(10)?,
        data: r.try_get(11)?,
        attempts: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        enqueued_at: r.try_get(14)?,
    })
}

/// A row's columns as read, before they become a [`Row`].
pub(crate) struct RawRow {
    pub id: i64,
    pub key: Option<String>,
    pub topic: String,
    pub message_id: String,
    pub source: String,
    pub ty: String,
    pub subject: Option<String>,
    pub time: Option<String>,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub extensions: String,
    pub data: Vec<u8>,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub enqueued_at: i64,
}

impl RawRow {
    pub(crate) fn into_row(self) -> Row {
        let message = Message {
            id: self.message_id,
            source: self.source,
            ty: self.ty,
            specversion: switchboard_core::SPEC_VERSION.to_owned(),
            subject: self.subject,
            time: self.time,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            // Written by `encode_extensions`; a hand-edited row that no longer parses keeps
            // its message and loses only the extensions, with a warning.
            extensions: decode_extensions(self.id, &self.extensions),
            data: Bytes::from(self.data),
        };
        Row {
            id: self.id,
            key: self.key,
            topic: self.topic,
            message,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
            next_attempt_at: self.next_attempt_at,
            enqueued_at: self.enqueued_at,
        }
    }
}

fn encode_extensions(extensions: &BTreeMap<String, String>) -> String {
    serde_json::to_string(extensions).unwrap_or_else(|_| "{}".to_owned())
}

fn decode_extensions(id: i64, text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(row = id, error = %e, "An outbox row's extensions are not a JSON object of strings; publishing it without them.");
        BTreeMap::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_always_takes_one_lane_and_keyless_rows_spread() {
        let topic = TopicName::from_static("t");
        let a = NewRow::new(&topic, Message::new("/s", "t", "1").with_key("order-7"), 0);
        let b = NewRow::new(&topic, Message::new("/s", "t", "2").with_key("order-7"), 0);
        assert_eq!((a.lane, a.key_lock), (b.lane, b.key_lock));
        assert!(a.key_lock.is_some());
        let lanes: std::collections::HashSet<i32> =
            (0..200).map(|i| NewRow::new(&topic, Message::new("/s", "t", format!("{i}")), 0).lane).collect();
        assert!(lanes.len() > 32, "keyless rows spread over the lanes: {}", lanes.len());
        assert!(lanes.iter().all(|l| (0..LANES as i32).contains(l)));
    }

    #[test]
    fn extensions_survive_the_round_trip() {
        let message = Message::new("/s", "t", "x").with_key("k").with_extension("traceparent", "00-ab-cd-01");
        let text = encode_extensions(&message.extensions);
        assert_eq!(decode_extensions(1, &text), message.extensions);
        assert!(decode_extensions(1, "not json").is_empty());
    }
}
