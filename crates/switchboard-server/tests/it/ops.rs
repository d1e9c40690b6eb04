//! ops tests
