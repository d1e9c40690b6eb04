//! The service graph from spans and from the broker's observations.

mod limits;
mod otlp;
mod spans;
