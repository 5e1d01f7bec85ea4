//! Typed coaching documents over Automerge: creating, editing, reading, conflicts and history.
