//! The SDK's own tests on the embedded backend: the bus, the router and its middleware.
//! (The backend contract itself is covered by `switchboard-conformance` on every backend.)

mod bus;
mod eventstore;
mod layers;
mod outbox;
mod outbox_crash;
mod projection;
mod projection_crash;
mod router;
mod saga;
mod saga_crash;
mod saga_model;
mod telemetry;
mod util;
