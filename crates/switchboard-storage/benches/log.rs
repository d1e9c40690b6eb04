//! Log benchmarks (placeholder until written).
fn main() {}
