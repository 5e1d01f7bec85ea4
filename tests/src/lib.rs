//! Shared helpers for Tandem's integration tests and benchmarks.

pub mod fixtures;
