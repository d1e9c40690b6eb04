//! graphql tests
