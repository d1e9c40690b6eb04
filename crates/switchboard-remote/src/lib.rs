//! Switchboard SDK backend (remote). Work in progress.
