//! Identifiers: document ids in automerge-repo's bs58check form, and the typed ids built on them.
//!
//! A [`DocumentId`] is 16 random bytes. On the wire and in URLs it is written in bs58check (base58
//! with a four-byte double-SHA-256 checksum), exactly as automerge-repo writes it, so `automerge:`
//! URLs made here open in the official JS repo and the other way round.

use std::fmt;
use std::str::FromStr;

use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The `automerge:` URL prefix automerge-repo uses for documents.
pub const URL_PREFIX: &str = "automerge:";

/// The id of one Automerge document: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocumentId([u8; 16]);

impl DocumentId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::rng().random())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Reads the raw 16 bytes, as automerge-repo's binary document ids carry them.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
            Error::invalid(format!("a document id has 16 bytes, not {}", bytes.len()))
        })?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The `automerge:<bs58check>` URL of this document.
    pub fn url(&self) -> String {
        format!("{URL_PREFIX}{self}")
    }

    /// Parses either a bare bs58check id or an `automerge:` URL (ignoring any `#heads` suffix).
    pub fn parse(text: &str) -> Result<Self> {
        let bare = text.strip_prefix(URL_PREFIX).unwrap_or(text);
        let bare = bare.split_once('#').map_or(bare, |(id, _heads)| id);
        let decoded = bs58::decode(bare)
            .into_vec()
            .map_err(|e| Error::invalid(format!("document id {text:?} is not base58: {e}")))?;
        if decoded.len() != 16 + CHECKSUM_LEN {
            return Err(Error::invalid(format!(
                "document id {text:?} decodes to {} bytes, expected 16 and a checksum",
                decoded.len()
            )));
        }
        let (payload, checksum) = decoded.split_at(16);
        if checksum != bs58check_checksum(payload) {
            return Err(Error::invalid(format!(
                "document id {text:?} has a bad checksum"
            )));
        }
        Self::from_slice(payload)
    }
}

const CHECKSUM_LEN: usize = 4;

/// The bs58check checksum: the first four bytes of SHA-256(SHA-256(payload)).
///
/// Written here rather than through `bs58`'s `check` feature because that feature pulls a second
/// major version of `sha2` into the tree next to the one automerge already uses.
fn bs58check_checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let twice = Sha256::digest(Sha256::digest(payload));
    let mut checksum = [0; CHECKSUM_LEN];
    checksum.copy_from_slice(&twice[..CHECKSUM_LEN]);
    checksum
}

impl fmt::Display for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(16 + CHECKSUM_LEN);
        bytes.extend_from_slice(&self.0);
        bytes.extend_from_slice(&bs58check_checksum(&self.0));
        f.write_str(&bs58::encode(bytes).into_string())
    }
}

impl fmt::Debug for DocumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DocumentId({self})")
    }
}

impl FromStr for DocumentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Declares a newtype over [`DocumentId`] for one kind of document.
macro_rules! document_id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub DocumentId);

        impl $name {
            pub fn document_id(&self) -> DocumentId {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<$name> for DocumentId {
            fn from(id: $name) -> DocumentId {
                id.0
            }
        }
    };
}

document_id_newtype!(
    /// The document holding one mentee's Individualized Academic Success Plan.
    PlanId
);
document_id_newtype!(
    /// The document holding one coaching session's log.
    SessionId
);
document_id_newtype!(
    /// The document holding one coach's private notes on one mentee.
    NotesId
);
document_id_newtype!(
    /// The directory document listing the documents of one pairing.
    DirectoryId
);

/// Declares a string newtype: an id inside a document, a person, or a protocol peer's id.
macro_rules! string_id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }
    };
}

pub(crate) use string_id_newtype;

string_id_newtype!(
    /// A person: mentee, coach or coordinator. The relay's user name.
    UserId
);
string_id_newtype!(
    /// A goal inside a plan; stable across edits and merges.
    GoalId
);
string_id_newtype!(
    /// A milestone inside a goal.
    MilestoneId
);
string_id_newtype!(
    /// An action item inside a session log.
    ActionItemId
);
string_id_newtype!(
    /// A check-in inside a plan.
    CheckInId
);

/// Makes a short random id for an item inside a document (goal, milestone, action item, check-in).
///
/// Twelve random bytes in base58: unique enough that two offline devices never pick the same one.
pub fn new_item_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    bs58::encode(bytes).into_string()
}

/// One device of one user. Its 16 bytes are also the Automerge actor id of every change the
/// device makes, so the relay can bind changes to the authenticated device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 16]);

impl DeviceId {
    pub fn random() -> Self {
        Self(rand::rng().random())
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| {
            Error::invalid(format!("a device id has 16 bytes, not {}", bytes.len()))
        })?;
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The Automerge actor id this device writes with.
    pub fn actor(&self) -> automerge::ActorId {
        automerge::ActorId::from(&self.0[..])
    }

    /// Parses the lower-case hex form that [`fmt::Display`] writes.
    pub fn parse_hex(text: &str) -> Result<Self> {
        let bytes = hex_decode(text)
            .ok_or_else(|| Error::invalid(format!("device id {text:?} is not hex")))?;
        Self::from_slice(&bytes)
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn document_ids_round_trip_through_urls() {
        let id = DocumentId::random();
        assert_eq!(DocumentId::parse(&id.url()).unwrap(), id);
        assert_eq!(DocumentId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(DocumentId::parse(&format!("{}#abc", id.url())).unwrap(), id);
    }

    #[test]
    fn bad_document_ids_are_refused() {
        let good = DocumentId::random().to_string();
        let mut tampered = good.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'2' { b'3' } else { b'2' };
        let tampered = String::from_utf8(tampered).unwrap();
        for bad in ["", "0OIl", "automerge:abc", tampered.as_str()] {
            assert!(DocumentId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn device_ids_round_trip_through_hex() {
        let id = DeviceId::random();
        assert_eq!(DeviceId::parse_hex(&id.to_string()).unwrap(), id);
        assert!(DeviceId::parse_hex("zz").is_err());
    }
}
