//! Tandem relay.
