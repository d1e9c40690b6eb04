//! The shop end to end: its services over real sockets, on SQLite and PostgreSQL.

mod checkout;
mod harness;
mod orders;
