//! Integration tests of `switchboard-sync`: the call policy on its own, the HTTP client and
//! the server layer over real loopback sockets.

mod http_client;
mod incoming;
mod policy;
mod support;
