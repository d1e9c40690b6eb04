//! The conformance suite. Work in progress.
