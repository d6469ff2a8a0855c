//! Benchmark helpers (see benches/).
