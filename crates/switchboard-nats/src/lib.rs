//! Switchboard SDK backend (nats). Work in progress.
