//! The shop end to end: its services over real sockets, on SQLite and PostgreSQL, in one
//! process and as one process per service on `switchboard serve`, RabbitMQ and NATS.

mod checkout;
mod dashboard;
mod harness;
mod orders;
mod processes;
mod smtp;
