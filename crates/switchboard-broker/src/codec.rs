//! How a published message is laid out inside a storage record.
//!
//! Format version 1, all integers little-endian, strings as `u32 length + UTF-8 bytes`:
//!
//! ```text
//! u8  version (=1)
//! u8  flags: bit0 deliver_at present, bit1 target subscription present
//! [u64 deliver_at ms]            if bit0
//! [str target subscription]      if bit1 (a dead letter redriven to one subscription only)
//! str id, str source, str type, str specversion
//! 4 × optional str (u8 present + str): subject, time, datacontenttype, dataschema
//! u32 extension count, then (str name, str value) pairs
//! u32 data length + data bytes
//! ```
//!
//! The storage layer already checksums each batch, so this layer trusts its input only as far
//! as bounds checks: a malformed record is reported, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_core::{Message, SubscriptionName, Timestamp};

const VERSION: u8 = 1;
const FLAG_DELIVER_AT: u8 = 1;
const FLAG_TARGET: u8 = 2;

/// A message as stored, with the broker's own per-message fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredMessage {
    pub(crate) message: Message,
    /// Queue subscriptions hold the message back until this time.
    pub(crate) deliver_at: Option<Timestamp>,
    /// Only this subscription sees the message (redrive from a dead-letter topic).
    pub(crate) target: Option<SubscriptionName>,
}

/// A stored record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("stored message is malformed: {0}")]
pub(crate) struct DecodeError(&'static str);

pub(crate) fn encode(
    msg: &Message,
    deliver_at: Option<Timestamp>,
    target: Option<&SubscriptionName>,
) -> Bytes {
    let mut b = BytesMut::with_capacity(msg.size() + 64);
    b.put_u8(VERSION);
    let flags = if deliver_at.is_some() { FLAG_DELIVER_AT } else { 0 }
        | if target.is_some() { FLAG_TARGET } else { 0 };
    b.put_u8(flags);
    if let Some(t) = deliver_at {
        b.put_u64_le(t.0);
    }
    if let Some(t) = target {
        put_str(&mut b, t.as_str());
    }
    for s in [&msg.id, &msg.source, &msg.ty, &msg.specversion] {
        put_str(&mut b, s);
    }
    for o in [&msg.subject, &msg.time, &msg.datacontenttype, &msg.dataschema] {
        match o {
            Some(s) => {
                b.put_u8(1);
                put_str(&mut b, s);
            }
            None => b.put_u8(0),
        }
    }
    b.put_u32_le(msg.extensions.len() as u32);
    for (k, v) in &msg.extensions {
        put_str(&mut b, k);
        put_str(&mut b, v);
    }
    b.put_u32_le(msg.data.len() as u32);
    b.put_slice(&msg.data);
    b.freeze()
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s.as_bytes());
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError("truncated"))?;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn opt_str(&mut self) -> Result<Option<String>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            _ => Err(DecodeError("bad option tag")),
        }
    }
    /// Checks a string as [`str`](Self::str) does, without keeping it.
    fn skip_str(&mut self) -> Result<(), DecodeError> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(&b).map(|_| ()).map_err(|_| DecodeError("string is not UTF-8"))
    }
    fn skip_opt_str(&mut self) -> Result<(), DecodeError> {
        match self.u8()? {
            0 => Ok(()),
            1 => self.skip_str(),
            _ => Err(DecodeError("bad option tag")),
        }
    }
}

/// The id of a stored message, and when it is for one subscription only, checking the whole
/// record exactly as [`decode`] does but building nothing else: what rebuilding the dedup
/// window at open needs from every record in the window, where a full decode (a `Message`
/// with its strings and extension map) was most of the cost.
///
/// # Errors
/// Exactly when [`decode`] fails on the same bytes.
pub(crate) fn decode_id(buf: Bytes) -> Result<String, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown message format version"));
    }
    let flags = r.u8()?;
    if flags & FLAG_DELIVER_AT != 0 {
        r.u64()?;
    }
    if flags & FLAG_TARGET != 0 {
        SubscriptionName::new(r.str()?).map_err(|_| DecodeError("bad target subscription"))?;
    }
    let id = r.str()?;
    for _ in 0..3 {
        r.skip_str()?;
    }
    for _ in 0..4 {
        r.skip_opt_str()?;
    }
    for _ in 0..r.u32()? {
        r.skip_str()?;
        r.skip_str()?;
    }
    let len = r.u32()? as usize;
    r.take(len)?;
    if r.pos != r.buf.len() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(id)
}

pub(crate) fn decode(buf: Bytes) -> Result<StoredMessage, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown message format version"));
    }
    let flags = r.u8()?;
    let deliver_at = if flags & FLAG_DELIVER_AT != 0 { Some(Timestamp(r.u64()?)) } else { None };
    let target = if flags & FLAG_TARGET != 0 {
        Some(SubscriptionName::new(r.str()?).map_err(|_| DecodeError("bad target subscription"))?)
    } else {
        None
    };
    let (id, source, ty, specversion) = (r.str()?, r.str()?, r.str()?, r.str()?);
    let (subject, time, datacontenttype, dataschema) =
        (r.opt_str()?, r.opt_str()?, r.opt_str()?, r.opt_str()?);
    let n = r.u32()?;
    let mut extensions = std::collections::BTreeMap::new();
    for _ in 0..n {
        let k = r.str()?;
        extensions.insert(k, r.str()?);
    }
    let len = r.u32()? as usize;
    let data = r.take(len)?;
    if r.pos != r.buf.len() {
        return Err(DecodeError("trailing bytes"));
    }
    let message =
        Message { id, source, ty, specversion, subject, time, datacontenttype, dataschema, extensions, data };
    Ok(StoredMessage { message, deliver_at, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(data in proptest::collection::vec(any::<u8>(), 0..300), subject in proptest::option::of(".{0,20}"),
                     ext in proptest::collection::btree_map("[a-z]{1,8}", ".{0,10}", 0..4), at in proptest::option::of(any::<u64>())) {
            let mut m = Message::new("src", "ty", data);
            m.subject = subject;
            m.extensions = ext;
            let target = SubscriptionName::new("billing").ok();
            let enc = encode(&m, at.map(Timestamp), target.as_ref());
            let dec = decode(enc.clone()).unwrap();
            prop_assert_eq!(decode_id(enc.clone()).unwrap(), m.id.clone());
            prop_assert_eq!(dec.message, m);
            prop_assert_eq!(dec.deliver_at, at.map(Timestamp));
            prop_assert_eq!(dec.target, target);
            // Every strict prefix is rejected, never misread.
            for cut in [0, 1, enc.len() / 2, enc.len() - 1] {
                prop_assert!(decode(enc.slice(..cut)).is_err());
                prop_assert!(decode_id(enc.slice(..cut)).is_err());
            }
        }

        /// The id-only decode accepts exactly what the full decode accepts, on any bytes.
        #[test]
        fn decode_id_agrees_with_decode(bytes in proptest::collection::vec(any::<u8>(), 0..200), flip in any::<usize>()) {
            let m = Message::new("src", "ty", bytes.clone()).with_extension("k", "v");
            let mut enc = encode(&m, None, None).to_vec();
            // A valid record with one byte changed, and plain noise.
            let i = flip % enc.len();
            enc[i] ^= 0x80;
            for candidate in [Bytes::from(enc), Bytes::from(bytes)] {
                let full = decode(candidate.clone()).map(|s| s.message.id);
                let id = decode_id(candidate);
                prop_assert_eq!(full.ok(), id.ok());
            }
        }
    }
}
