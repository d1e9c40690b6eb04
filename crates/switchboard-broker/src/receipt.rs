//! Receipts: the handle a queue consumer uses to ack, nack or extend one delivery.

use std::fmt;
use std::str::FromStr;

use crate::error::BrokerError;

/// Names one delivery (one lease) of one message.
///
/// Printed as `<partition>.<offset>.<lease>`; a receipt stays valid until its lease expires or
/// the message is acked or nacked through it. Lease numbers are never reused, even across
/// restarts, so a stale receipt can never settle a later delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Receipt {
    /// The partition of the message.
    pub partition: u32,
    /// The offset of the message.
    pub offset: u64,
    /// The lease this delivery holds.
    pub lease: u64,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.partition, self.offset, self.lease)
    }
}

impl FromStr for Receipt {
    type Err = BrokerError;
    fn from_str(s: &str) -> Result<Self, BrokerError> {
        let mut it = s.split('.');
        let parsed = (|| {
            let r = Receipt {
                partition: it.next()?.parse().ok()?,
                offset: it.next()?.parse().ok()?,
                lease: it.next()?.parse().ok()?,
            };
            it.next().is_none().then_some(r)
        })();
        parsed.ok_or_else(|| BrokerError::UnknownReceipt(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_roundtrip_and_reject_garbage() {
        let r = Receipt { partition: 3, offset: 99, lease: 123456 };
        assert_eq!(r.to_string().parse::<Receipt>().unwrap(), r);
        for bad in ["", "1.2", "1.2.3.4", "a.b.c", "-1.2.3"] {
            assert!(matches!(bad.parse::<Receipt>(), Err(BrokerError::UnknownReceipt(_))), "{bad}");
        }
    }
}
