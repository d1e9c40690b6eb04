//! Switchboard SDK backend (amqp). Work in progress.
