//! Shared helpers for Tandem integration tests.
