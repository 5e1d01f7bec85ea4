//! Tandem bindings.
