//! The example's two services in-process, over loopback sockets: the order service calling
//! a real inventory, and a scripted one that fails, stalls or records what it received.

mod grpc;
mod http;
mod support;
