//! The sans-IO automerge-repo sync engine: events in, effects out.
