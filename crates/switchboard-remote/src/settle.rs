//! How a remote delivery is acked, nacked, extended or abandoned: requests over the consume
//! stream it arrived on (see [`Session`]).

use std::sync::Arc;
use std::time::Duration;

use switchboard_core::backend::Settle;
use switchboard_core::contract::{BusError, LeaseLostCause, Mode, Nack};
use switchboard_proto::switchboard::v1::consume_request::{self as req, Request as In};

use crate::session::Session;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One delivery's handle on its stream.
pub(crate) struct RemoteSettle {
    pub(crate) session: Arc<Session>,
    /// Queue mode: the server's receipt.
    pub(crate) receipt: String,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
}

#[async_trait::async_trait]
impl Settle for RemoteSettle {
    /// Queue: `ack` with the receipt. Stream: commits the offset after the highest contiguous
    /// acked one (see [`crate::offsets`]); an ack ahead of an unacked delivery is remembered
    /// and committed with it.
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        match self.session.mode {
            Mode::Queue => {
                let ack = req::Ack { receipts: vec![self.receipt] };
                self.session.settle(In::Ack(ack)).await
            }
            Mode::Stream => {
                self.session.credit_back();
                self.session.ack_offset(self.partition, self.offset).await
            }
        }
    }

    /// Queue: `nack` with the delay and error. Stream: there is no redelivery of one
    /// message; the offset stays uncommitted, so the message is read again when the
    /// subscription is next opened (at-least-once), and the delay does not apply.
    async fn nack(self: Box<Self>, nack: Nack) -> Result<(), BusError> {
        match self.session.mode {
            Mode::Queue => {
                let nack = req::Nack {
                    receipts: vec![self.receipt],
                    delay_ms: millis(nack.delay),
                    error: nack.error.unwrap_or_default(),
                };
                self.session.settle(In::Nack(nack)).await
            }
            Mode::Stream if self.session.alive() => {
                self.session.credit_back();
                Ok(())
            }
            Mode::Stream => Err(BusError::lease_lost(
                LeaseLostCause::ConnectionLost,
                "the consume stream it came from broke",
            )),
        }
    }

    /// Queue: pushes the lease out. Stream deliveries have no lease: nothing to do.
    async fn extend(&self, by: Duration) -> Result<(), BusError> {
        match self.session.mode {
            Mode::Queue => {
                let extend = req::Extend { receipts: vec![self.receipt.clone()], by_ms: millis(by) };
                self.session.request(In::Extend(extend)).await.map(drop)
            }
            Mode::Stream => Ok(()),
        }
    }

    /// Queue: a nack without delay, sent without waiting (if it is lost, the lease runs out
    /// and the message comes back anyway). Stream: as a nack.
    fn abandon(self: Box<Self>) {
        if self.session.mode == Mode::Queue {
            let nack = req::Nack { receipts: vec![self.receipt], delay_ms: 0, error: String::new() };
            self.session.send(In::Nack(nack));
        }
        self.session.credit_back();
    }
}
