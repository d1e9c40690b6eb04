//! grpc tests
