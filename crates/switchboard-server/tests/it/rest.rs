//! rest tests
