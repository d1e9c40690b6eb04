//! The remote backend against a real `switchboard serve` on loopback, over the real socket.
#![allow(clippy::unwrap_used)]

mod connect;
mod publish;
mod queue;
mod restart;
mod stream;
mod util;
