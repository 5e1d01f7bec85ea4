//! The automerge-repo network protocol messages (version "1") and their CBOR form: one CBOR map
//! per websocket binary frame.
//!
//! The field names and their order follow what the official JS implementation writes
//! (`@automerge/automerge-repo` and its websocket adapter): `peerMetadata` rather than the
//! `metadata` the README's CDDL names, the document id as a bs58check string, `data` as a CBOR byte
//! string. Decoding is lenient where the JS side is loose: `metadata` is read as well as
//! `peerMetadata`, CBOR `undefined` and `null` count as absent, a document id may also come as raw
//! bytes, and `count` may be a float because JS numbers are.
//!
//! Message types this engine does not act on (`remote-subscription-change`,
//! `remote-heads-changed`, or anything newer) decode to [`Message::Other`], so the engine can
//! ignore them as the JS repo does, instead of failing the connection.

use ciborium::Value;

use super::{PeerId, PeerMetadata, StorageId};
use crate::error::{Error, Result};
use crate::ids::DocumentId;

/// The only protocol version there is.
pub const PROTOCOL_VERSION: &str = "1";

/// One protocol message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// The initiating peer's opening message.
    Join {
        sender_id: PeerId,
        supported_protocol_versions: Vec<String>,
        metadata: Option<PeerMetadata>,
    },
    /// The receiving peer's answer to `join`.
    Peer {
        sender_id: PeerId,
        selected_protocol_version: String,
        target_id: PeerId,
        metadata: Option<PeerMetadata>,
    },
    /// Advisory: the sender is about to disconnect.
    Leave { sender_id: PeerId },
    /// Like `sync`, but the sender wants `doc-unavailable` back if the target does not have the
    /// document.
    Request {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        /// An encoded `automerge::sync::Message`.
        data: Vec<u8>,
    },
    /// One automerge sync message for one document.
    Sync {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        /// An encoded `automerge::sync::Message`.
        data: Vec<u8>,
    },
    /// The sender does not have the document (or will not say that it has).
    DocUnavailable {
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
    },
    /// Application data about a document that is relayed, never stored.
    Ephemeral {
        sender_id: PeerId,
        target_id: PeerId,
        count: u64,
        session_id: String,
        document_id: DocumentId,
        data: Vec<u8>,
    },
    /// A protocol error; the sender closes the connection after it.
    Error {
        sender_id: Option<PeerId>,
        target_id: Option<PeerId>,
        message: String,
    },
    /// Tandem's reconnect digest exchange (type `tandem-digest`, see [`DigestStep`]). Sent only
    /// to peers that advertised `tandemDigest` in their `peerMetadata`; automerge-repo peers never
    /// see it (and would ignore it).
    Digest {
        sender_id: PeerId,
        target_id: PeerId,
        step: DigestStep,
    },
    /// Tandem's snapshot fetch (type `tandem-fetch`, see [`FetchStep`] and `sync::fetch`). Sent
    /// only to peers that advertised `tandemFetch` in their `peerMetadata`.
    Fetch {
        sender_id: PeerId,
        target_id: PeerId,
        step: FetchStep,
    },
    /// A well-formed message of a type this engine does not act on.
    Other { message_type: String },
}

/// The steps of the snapshot fetch: a device asks for documents it holds nothing of in one
/// message, and the relay answers with their compacted snapshots (see `sync::fetch`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum FetchStep {
    /// Device to relay: the 16-byte ids of the documents it wants.
    Want(Vec<u8>),
    /// Relay to device, first answer to the oldest unanswered `want`: how many snapshots follow
    /// and their total size in bytes, so the app can show progress.
    Manifest { count: u64, bytes: u64 },
    /// Relay to device: a batch of snapshots, each its 16-byte document id, the snapshot's
    /// length (LEB128) and the snapshot (automerge's compacted `save()`).
    Snapshots(Vec<u8>),
    /// Relay to device, last answer to the oldest unanswered `want`: the ids that are
    /// unavailable (absent or not readable by the device, told apart nowhere) and the ids left to
    /// the plain protocol (too large for a snapshot frame); each a run of 16-byte ids.
    Done {
        unavailable: Vec<u8>,
        plain: Vec<u8>,
    },
}

impl FetchStep {
    fn name(&self) -> &'static str {
        match self {
            Self::Want(_) => "want",
            Self::Manifest { .. } => "manifest",
            Self::Snapshots(_) => "snapshots",
            Self::Done { .. } => "done",
        }
    }
}

/// The message type of [`Message::Fetch`].
pub const FETCH_MESSAGE_TYPE: &str = "tandem-fetch";

/// The steps of the reconnect digest exchange. Every digest is over (document id, sorted heads)
/// of the documents one side shares with the other (see `sync::digest`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DigestStep {
    /// Device to relay: how many documents it holds and the XOR of their 16-byte hashes; to a
    /// relay that advertised `tandemSketch`, also how many of them changed since it last synced
    /// them with that relay (`changed`), which sizes the relay's sketch.
    Offer {
        count: u64,
        digest: Vec<u8>,
        changed: Option<u64>,
    },
    /// Relay to device: the same digest; nothing differs.
    Match,
    /// Relay to device, to a device that advertised `tandemSketch`, instead of `buckets`: how
    /// many entries the relay holds for it, their 16-byte total, and an invertible Bloom lookup
    /// table of its (id, 8-byte hash) entries (cells of 29 bytes, keyed with `seed`; see
    /// `sync::sketch`), sized to the expected difference.
    Sketch {
        count: u64,
        total: Vec<u8>,
        seed: u64,
        cells: Vec<u8>,
    },
    /// Device to relay, after a sketch it decoded: the 16-byte ids of every document that
    /// differs (either side's); every other entry of the relay's is equal. The device syncs the
    /// ones it holds as usual.
    Decoded(Vec<u8>),
    /// Device to relay: the sketch did not decode (too small for the difference); the relay
    /// answers with its `buckets`.
    Undecodable,
    /// Relay to device: its digests per bucket (8 bytes each; the bucket count is a power of two,
    /// a document's bucket is the top bits of its id's first two bytes).
    Buckets(Vec<u8>),
    /// Device to relay: (16-byte document id, 8-byte hash) of its documents in differing buckets.
    Entries(Vec<u8>),
    /// Relay to device: the 16-byte ids of the listed documents that differ; they sync as usual.
    Differ(Vec<u8>),
}

impl DigestStep {
    fn name(&self) -> &'static str {
        match self {
            Self::Offer { .. } => "offer",
            Self::Match => "match",
            Self::Sketch { .. } => "sketch",
            Self::Decoded(_) => "decoded",
            Self::Undecodable => "undecodable",
            Self::Buckets(_) => "buckets",
            Self::Entries(_) => "entries",
            Self::Differ(_) => "differ",
        }
    }
}

/// The message type of [`Message::Digest`].
pub const DIGEST_MESSAGE_TYPE: &str = "tandem-digest";

impl Message {
    /// A `request` or a `sync` carrying one encoded automerge sync message.
    pub(crate) fn sync_data(
        is_request: bool,
        sender_id: PeerId,
        target_id: PeerId,
        document_id: DocumentId,
        data: Vec<u8>,
    ) -> Self {
        if is_request {
            Self::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Self::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        }
    }

    /// The protocol's name for this message's type.
    pub fn message_type(&self) -> &str {
        match self {
            Self::Join { .. } => "join",
            Self::Peer { .. } => "peer",
            Self::Leave { .. } => "leave",
            Self::Request { .. } => "request",
            Self::Sync { .. } => "sync",
            Self::DocUnavailable { .. } => "doc-unavailable",
            Self::Ephemeral { .. } => "ephemeral",
            Self::Error { .. } => "error",
            Self::Digest { .. } => DIGEST_MESSAGE_TYPE,
            Self::Fetch { .. } => FETCH_MESSAGE_TYPE,
            Self::Other { message_type } => message_type,
        }
    }

    /// Encodes the message as one CBOR map.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = MapBuilder::default();
        map.text("type", self.message_type());
        // Field order mirrors the JS implementation, so our frames match its byte for byte.
        match self {
            Self::Join {
                sender_id,
                supported_protocol_versions,
                metadata,
            } => {
                map.text("senderId", sender_id.as_str());
                if let Some(metadata) = metadata {
                    map.value("peerMetadata", encode_metadata(metadata));
                }
                map.value(
                    "supportedProtocolVersions",
                    Value::Array(
                        supported_protocol_versions
                            .iter()
                            .map(|v| Value::Text(v.clone()))
                            .collect(),
                    ),
                );
            }
            Self::Peer {
                sender_id,
                selected_protocol_version,
                target_id,
                metadata,
            } => {
                map.text("senderId", sender_id.as_str());
                if let Some(metadata) = metadata {
                    map.value("peerMetadata", encode_metadata(metadata));
                }
                map.text("selectedProtocolVersion", selected_protocol_version);
                map.text("targetId", target_id.as_str());
            }
            Self::Leave { sender_id } => map.text("senderId", sender_id.as_str()),
            Self::Request {
                sender_id,
                target_id,
                document_id,
                data,
            } => {
                map.text("targetId", target_id.as_str());
                map.text("documentId", &document_id.to_string());
                map.value("data", Value::Bytes(data.clone()));
                map.text("senderId", sender_id.as_str());
            }
            Self::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            } => {
                map.text("targetId", target_id.as_str());
                map.value("data", Value::Bytes(data.clone()));
                map.text("documentId", &document_id.to_string());
                map.text("senderId", sender_id.as_str());
            }
            Self::DocUnavailable {
                sender_id,
                target_id,
                document_id,
            } => {
                map.text("documentId", &document_id.to_string());
                map.text("targetId", target_id.as_str());
                map.text("senderId", sender_id.as_str());
            }
            Self::Ephemeral {
                sender_id,
                target_id,
                count,
                session_id,
                document_id,
                data,
            } => {
                map.text("targetId", target_id.as_str());
                map.text("documentId", &document_id.to_string());
                map.value("data", Value::Bytes(data.clone()));
                map.value("count", Value::Integer((*count).into()));
                map.text("sessionId", session_id);
                map.text("senderId", sender_id.as_str());
            }
            Self::Error {
                sender_id,
                target_id,
                message,
            } => {
                if let Some(sender_id) = sender_id {
                    map.text("senderId", sender_id.as_str());
                }
                map.text("message", message);
                if let Some(target_id) = target_id {
                    map.text("targetId", target_id.as_str());
                }
            }
            Self::Digest {
                sender_id,
                target_id,
                step,
            } => {
                map.text("senderId", sender_id.as_str());
                map.text("targetId", target_id.as_str());
                map.text("step", step.name());
                match step {
                    DigestStep::Offer {
                        count,
                        digest,
                        changed,
                    } => {
                        map.value("count", Value::Integer((*count).into()));
                        map.value("data", Value::Bytes(digest.clone()));
                        if let Some(changed) = changed {
                            // An older relay ignores the key.
                            map.value("changed", Value::Integer((*changed).into()));
                        }
                    }
                    DigestStep::Match | DigestStep::Undecodable => {}
                    DigestStep::Sketch {
                        count,
                        total,
                        seed,
                        cells,
                    } => {
                        map.value("count", Value::Integer((*count).into()));
                        map.value("total", Value::Bytes(total.clone()));
                        map.value("seed", Value::Integer((*seed).into()));
                        map.value("data", Value::Bytes(cells.clone()));
                    }
                    DigestStep::Buckets(data)
                    | DigestStep::Entries(data)
                    | DigestStep::Differ(data)
                    | DigestStep::Decoded(data) => map.value("data", Value::Bytes(data.clone())),
                }
            }
            Self::Fetch {
                sender_id,
                target_id,
                step,
            } => {
                map.text("senderId", sender_id.as_str());
                map.text("targetId", target_id.as_str());
                map.text("step", step.name());
                match step {
                    FetchStep::Want(data) | FetchStep::Snapshots(data) => {
                        map.value("data", Value::Bytes(data.clone()));
                    }
                    FetchStep::Manifest { count, bytes } => {
                        map.value("count", Value::Integer((*count).into()));
                        map.value("size", Value::Integer((*bytes).into()));
                    }
                    FetchStep::Done { unavailable, plain } => {
                        map.value("data", Value::Bytes(unavailable.clone()));
                        map.value("plain", Value::Bytes(plain.clone()));
                    }
                }
            }
            Self::Other { .. } => {}
        }
        let mut bytes = Vec::new();
        // Writing a `Value` into a `Vec` cannot fail: there is no IO error and every value is
        // representable.
        if ciborium::into_writer(&Value::Map(map.0), &mut bytes).is_err() {
            bytes.clear();
        }
        bytes
    }

    /// Decodes one frame. Errors are [`Error::Protocol`] with a message fit to send back to the
    /// peer in an `error` message.
    pub fn decode(frame: &[u8]) -> Result<Self> {
        let value: Value = ciborium::from_reader(frame)
            .map_err(|e| Error::protocol(format!("frame is not valid CBOR: {e}")))?;
        let Value::Map(entries) = value else {
            return Err(Error::protocol("frame is not a CBOR map"));
        };
        let fields = Fields(entries);
        let message_type = fields.required_text("type")?;
        let message = match message_type.as_str() {
            "join" => Self::Join {
                sender_id: fields.peer_id("senderId")?,
                // The JS server treats a missing list as "1"; so do we.
                supported_protocol_versions: match fields.get("supportedProtocolVersions") {
                    None => vec![PROTOCOL_VERSION.to_owned()],
                    Some(value) => text_array(value, "supportedProtocolVersions")?,
                },
                metadata: fields.metadata()?,
            },
            "peer" => Self::Peer {
                sender_id: fields.peer_id("senderId")?,
                selected_protocol_version: fields.required_text("selectedProtocolVersion")?,
                target_id: fields.peer_id("targetId")?,
                metadata: fields.metadata()?,
            },
            "leave" => Self::Leave {
                sender_id: fields.peer_id("senderId")?,
            },
            "request" => Self::Request {
                sender_id: fields.peer_id("senderId")?,
                target_id: fields.peer_id("targetId")?,
                document_id: fields.document_id()?,
                data: fields.bytes("data")?,
            },
            "sync" => Self::Sync {
                sender_id: fields.peer_id("senderId")?,
                target_id: fields.peer_id("targetId")?,
                document_id: fields.document_id()?,
                data: fields.bytes("data")?,
            },
            "doc-unavailable" => Self::DocUnavailable {
                sender_id: fields.peer_id("senderId")?,
                target_id: fields.peer_id("targetId")?,
                document_id: fields.document_id()?,
            },
            "ephemeral" => Self::Ephemeral {
                sender_id: fields.peer_id("senderId")?,
                target_id: fields.peer_id("targetId")?,
                count: fields.count()?,
                session_id: fields.required_text("sessionId")?,
                document_id: fields.document_id()?,
                data: fields.bytes("data")?,
            },
            "error" => Self::Error {
                sender_id: fields.optional_text("senderId")?.map(PeerId::from),
                target_id: fields.optional_text("targetId")?.map(PeerId::from),
                message: fields.optional_text("message")?.unwrap_or_default(),
            },
            DIGEST_MESSAGE_TYPE => {
                let step = match fields.required_text("step")?.as_str() {
                    "offer" => DigestStep::Offer {
                        count: fields.count()?,
                        digest: fields.bytes("data")?,
                        changed: match fields.get("changed") {
                            None => None,
                            Some(_) => Some(fields.unsigned("changed")?),
                        },
                    },
                    "match" => DigestStep::Match,
                    "sketch" => DigestStep::Sketch {
                        count: fields.count()?,
                        total: fields.bytes("total")?,
                        seed: fields.unsigned("seed")?,
                        cells: fields.bytes("data")?,
                    },
                    "decoded" => DigestStep::Decoded(fields.bytes("data")?),
                    "undecodable" => DigestStep::Undecodable,
                    "buckets" => DigestStep::Buckets(fields.bytes("data")?),
                    "entries" => DigestStep::Entries(fields.bytes("data")?),
                    "differ" => DigestStep::Differ(fields.bytes("data")?),
                    other => return Err(Error::protocol(format!("unknown digest step `{other}`"))),
                };
                Self::Digest {
                    sender_id: fields.peer_id("senderId")?,
                    target_id: fields.peer_id("targetId")?,
                    step,
                }
            }
            FETCH_MESSAGE_TYPE => {
                let step = match fields.required_text("step")?.as_str() {
                    "want" => FetchStep::Want(fields.bytes("data")?),
                    "manifest" => FetchStep::Manifest {
                        count: fields.count()?,
                        bytes: fields.unsigned("size")?,
                    },
                    "snapshots" => FetchStep::Snapshots(fields.bytes("data")?),
                    "done" => FetchStep::Done {
                        unavailable: fields.bytes("data")?,
                        plain: fields.bytes("plain")?,
                    },
                    other => return Err(Error::protocol(format!("unknown fetch step `{other}`"))),
                };
                Self::Fetch {
                    sender_id: fields.peer_id("senderId")?,
                    target_id: fields.peer_id("targetId")?,
                    step,
                }
            }
            _ => Self::Other { message_type },
        };
        Ok(message)
    }
}

/// Map entries in insertion order.
#[derive(Default)]
struct MapBuilder(Vec<(Value, Value)>);

impl MapBuilder {
    fn text(&mut self, key: &str, value: &str) {
        self.value(key, Value::Text(value.to_owned()));
    }

    fn value(&mut self, key: &str, value: Value) {
        self.0.push((Value::Text(key.to_owned()), value));
    }
}

fn encode_metadata(metadata: &PeerMetadata) -> Value {
    let mut map = MapBuilder::default();
    if let Some(storage_id) = &metadata.storage_id {
        map.text("storageId", storage_id.as_str());
    }
    map.value("isEphemeral", Value::Bool(metadata.is_ephemeral));
    if metadata.digest {
        // Tandem's reconnect digest; automerge-repo peers ignore unknown metadata keys.
        map.value("tandemDigest", Value::Integer(1.into()));
    }
    if metadata.sketch {
        // The reconnect digest's sketch; a Tandem peer without it answers with buckets.
        map.value("tandemSketch", Value::Integer(1.into()));
    }
    if metadata.fetch {
        // Tandem's snapshot fetch; ignored by automerge-repo peers too.
        map.value("tandemFetch", Value::Integer(1.into()));
    }
    Value::Map(map.0)
}

/// The entries of a decoded map, looked up by text key.
struct Fields(Vec<(Value, Value)>);

impl Fields {
    /// The value under `key`; `null` and `undefined` (which cbor-x writes for JS `undefined`)
    /// count as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find_map(|(k, v)| match (k, v) {
            (_, Value::Null) => None,
            (Value::Text(k), v) if k == key => Some(v),
            _ => None,
        })
    }

    fn optional_text(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Text(text)) => Ok(Some(text.clone())),
            Some(_) => Err(Error::protocol(format!("`{key}` is not a string"))),
        }
    }

    fn required_text(&self, key: &str) -> Result<String> {
        self.optional_text(key)?
            .ok_or_else(|| Error::protocol(format!("missing `{key}`")))
    }

    fn peer_id(&self, key: &str) -> Result<PeerId> {
        self.required_text(key).map(PeerId::from)
    }

    fn document_id(&self) -> Result<DocumentId> {
        match self.get("documentId") {
            None => Err(Error::protocol("missing `documentId`")),
            Some(Value::Text(text)) => DocumentId::parse(text)
                .map_err(|e| Error::protocol(format!("bad `documentId`: {e}"))),
            // samod and older JS peers may send the raw 16 bytes.
            Some(Value::Bytes(bytes)) => DocumentId::from_slice(bytes)
                .map_err(|e| Error::protocol(format!("bad `documentId`: {e}"))),
            Some(_) => Err(Error::protocol("`documentId` is not a string")),
        }
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>> {
        let mut value = self
            .get(key)
            .ok_or_else(|| Error::protocol(format!("missing `{key}`")))?;
        // A typed-array tag (cbor-x's `tagUint8Array`) wraps the byte string; look through it.
        while let Value::Tag(_, inner) = value {
            value = inner;
        }
        match value {
            Value::Bytes(bytes) => Ok(bytes.clone()),
            _ => Err(Error::protocol(format!("`{key}` is not a byte string"))),
        }
    }

    fn count(&self) -> Result<u64> {
        self.unsigned("count")
    }

    fn unsigned(&self, key: &str) -> Result<u64> {
        match self.get(key) {
            None => Err(Error::protocol(format!("missing `{key}`"))),
            Some(Value::Integer(n)) => {
                u64::try_from(*n).map_err(|_| Error::protocol(format!("`{key}` is out of range")))
            }
            Some(Value::Float(f)) if f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64 => {
                Ok(*f as u64)
            }
            Some(_) => Err(Error::protocol(format!(
                "`{key}` is not a non-negative integer"
            ))),
        }
    }

    /// `peerMetadata` as the implementations send it, or `metadata` as the README names it.
    fn metadata(&self) -> Result<Option<PeerMetadata>> {
        let Some(value) = self.get("peerMetadata").or_else(|| self.get("metadata")) else {
            return Ok(None);
        };
        let Value::Map(entries) = value else {
            return Err(Error::protocol("`peerMetadata` is not a map"));
        };
        let fields = Fields(entries.clone());
        let is_ephemeral = match fields.get("isEphemeral") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::protocol("`isEphemeral` is not a boolean")),
        };
        Ok(Some(PeerMetadata {
            storage_id: fields.optional_text("storageId")?.map(StorageId::from),
            is_ephemeral,
            digest: matches!(fields.get("tandemDigest"), Some(Value::Integer(n)) if i128::from(*n) == 1),
            sketch: matches!(fields.get("tandemSketch"), Some(Value::Integer(n)) if i128::from(*n) == 1),
            fetch: matches!(fields.get("tandemFetch"), Some(Value::Integer(n)) if i128::from(*n) == 1),
        }))
    }
}

fn text_array(value: &Value, key: &str) -> Result<Vec<String>> {
    let Value::Array(items) = value else {
        return Err(Error::protocol(format!("`{key}` is not an array")));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Text(text) => Ok(text.clone()),
            _ => Err(Error::protocol(format!("`{key}` holds a non-string"))),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fixed document id and its bs58check form, as automerge-repo writes it.
    fn doc() -> DocumentId {
        DocumentId::from_bytes([7; 16])
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// CBOR text string header + bytes, for writing fixtures by hand.
    fn text(s: &str) -> String {
        assert!(s.len() < 24);
        format!("{:02x}{}", 0x60 + s.len(), hex(s.as_bytes()))
    }

    /// Long text (24..256 bytes): header 0x78 + one length byte.
    fn text8(s: &str) -> String {
        assert!((24..256).contains(&s.len()));
        format!("78{:02x}{}", s.len(), hex(s.as_bytes()))
    }

    fn any_text(s: &str) -> String {
        if s.len() < 24 { text(s) } else { text8(s) }
    }

    #[test]
    fn join_matches_the_js_client_frame() {
        let message = Message::Join {
            sender_id: "alice".into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata {
                digest: false,
                sketch: false,
                fetch: false,
                storage_id: Some("st".into()),
                is_ephemeral: false,
            }),
        };
        // {type: "join", senderId: "alice", peerMetadata: {storageId: "st", isEphemeral: false},
        //  supportedProtocolVersions: ["1"]} — the key order of the JS `joinMessage()`.
        let expected = format!(
            "a4{}{}{}{}{}a2{}{}{}f4{}81{}",
            text("type"),
            text("join"),
            text("senderId"),
            text("alice"),
            text("peerMetadata"),
            text("storageId"),
            text("st"),
            text("isEphemeral"),
            any_text("supportedProtocolVersions"),
            text("1"),
        );
        assert_eq!(hex(&message.encode()), expected);
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn peer_matches_the_js_server_frame() {
        let message = Message::Peer {
            sender_id: "relay".into(),
            selected_protocol_version: "1".into(),
            target_id: "alice".into(),
            metadata: Some(PeerMetadata {
                digest: false,
                sketch: false,
                fetch: false,
                storage_id: None,
                is_ephemeral: true,
            }),
        };
        let expected = format!(
            "a5{}{}{}{}{}a1{}f5{}{}{}{}",
            text("type"),
            text("peer"),
            text("senderId"),
            text("relay"),
            text("peerMetadata"),
            text("isEphemeral"),
            any_text("selectedProtocolVersion"),
            text("1"),
            text("targetId"),
            text("alice"),
        );
        assert_eq!(hex(&message.encode()), expected);
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn sync_carries_a_byte_string_and_a_bs58check_id() {
        let message = Message::Sync {
            sender_id: "a".into(),
            target_id: "b".into(),
            document_id: doc(),
            data: vec![0x42, 0, 1],
        };
        let id = doc().to_string();
        let expected = format!(
            "a5{}{}{}{}{}43420001{}{}{}{}",
            text("type"),
            text("sync"),
            text("targetId"),
            text("b"),
            text("data"),
            text("documentId"),
            any_text(&id),
            text("senderId"),
            text("a"),
        );
        assert_eq!(hex(&message.encode()), expected);
        assert_eq!(Message::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn every_message_round_trips() {
        let messages = [
            Message::Leave {
                sender_id: "a".into(),
            },
            Message::Request {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
                data: vec![1, 2],
            },
            Message::DocUnavailable {
                sender_id: "a".into(),
                target_id: "b".into(),
                document_id: doc(),
            },
            Message::Ephemeral {
                sender_id: "a".into(),
                target_id: "b".into(),
                count: 3,
                session_id: "s".into(),
                document_id: doc(),
                data: vec![0xa0],
            },
            Message::Error {
                sender_id: Some("a".into()),
                target_id: None,
                message: "unsupported protocol version".into(),
            },
        ];
        for message in messages {
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
    }

    /// Encodes an arbitrary map of (key, value) for decoder tests.
    fn frame(entries: Vec<(&str, Value)>) -> Vec<u8> {
        let map = entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect();
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(map), &mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_readme_spelling_metadata_and_js_undefined_are_accepted() {
        // cbor-x writes JS `undefined` as simple value 23; ciborium reads it as null.
        let bytes = frame(vec![
            ("type", Value::Text("join".into())),
            ("senderId", Value::Text("a".into())),
            (
                "supportedProtocolVersions",
                Value::Array(vec![Value::Text("1".into())]),
            ),
            (
                "metadata",
                Value::Map(vec![
                    (Value::Text("storageId".into()), Value::Null),
                    (Value::Text("isEphemeral".into()), Value::Bool(true)),
                ]),
            ),
        ]);
        let mut with_undefined = bytes.clone();
        // Swap the null (0xf6) for undefined (0xf7).
        let at = with_undefined.iter().rposition(|b| *b == 0xf6).unwrap();
        with_undefined[at] = 0xf7;
        for bytes in [bytes, with_undefined] {
            assert_eq!(
                Message::decode(&bytes).unwrap(),
                Message::Join {
                    sender_id: "a".into(),
                    supported_protocol_versions: vec!["1".into()],
                    metadata: Some(PeerMetadata {
                        digest: false,
                        sketch: false,
                        fetch: false,
                        storage_id: None,
                        is_ephemeral: true
                    }),
                }
            );
        }
    }

    #[test]
    fn js_float_counts_and_binary_document_ids_are_accepted() {
        let bytes = frame(vec![
            ("type", Value::Text("ephemeral".into())),
            ("senderId", Value::Text("a".into())),
            ("targetId", Value::Text("b".into())),
            ("count", Value::Float(4.0)),
            ("sessionId", Value::Text("s".into())),
            ("documentId", Value::Bytes(vec![7; 16])),
            ("data", Value::Tag(64, Box::new(Value::Bytes(vec![1])))),
        ]);
        let Message::Ephemeral {
            count,
            document_id,
            data,
            ..
        } = Message::decode(&bytes).unwrap()
        else {
            panic!("not ephemeral");
        };
        assert_eq!((count, document_id, data), (4, doc(), vec![1]));
    }

    #[test]
    fn unknown_and_gossip_types_decode_to_other() {
        for kind in [
            "remote-heads-changed",
            "remote-subscription-change",
            "future",
        ] {
            let bytes = frame(vec![
                ("type", Value::Text(kind.into())),
                ("senderId", Value::Text("a".into())),
            ]);
            assert_eq!(
                Message::decode(&bytes).unwrap(),
                Message::Other {
                    message_type: kind.into()
                }
            );
        }
    }

    #[test]
    fn every_fetch_step_and_the_fetch_flag_round_trip() {
        let steps = [
            FetchStep::Want(vec![7; 32]),
            FetchStep::Manifest {
                count: 1000,
                bytes: 400_000,
            },
            FetchStep::Snapshots(vec![1, 2, 3]),
            FetchStep::Done {
                unavailable: vec![9; 16],
                plain: Vec::new(),
            },
        ];
        for step in steps {
            let message = Message::Fetch {
                sender_id: "a".into(),
                target_id: "b".into(),
                step,
            };
            assert_eq!(message.message_type(), FETCH_MESSAGE_TYPE);
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
        let join = Message::Join {
            sender_id: "a".into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
                digest: true,
                sketch: true,
                fetch: true,
            }),
        };
        assert_eq!(Message::decode(&join.encode()).unwrap(), join);
    }

    #[test]
    fn every_digest_step_and_the_sketch_flag_round_trip() {
        let steps = [
            DigestStep::Offer {
                count: 10_000,
                digest: vec![1; 16],
                changed: None,
            },
            DigestStep::Offer {
                count: 10_000,
                digest: vec![1; 16],
                changed: Some(5),
            },
            DigestStep::Match,
            DigestStep::Sketch {
                count: 9_999,
                total: vec![2; 16],
                seed: u64::MAX,
                cells: vec![3; 29 * 4],
            },
            DigestStep::Decoded(vec![4; 32]),
            DigestStep::Undecodable,
            DigestStep::Buckets(vec![5; 8]),
            DigestStep::Entries(vec![6; 24]),
            DigestStep::Differ(vec![7; 16]),
        ];
        for step in steps {
            let message = Message::Digest {
                sender_id: "a".into(),
                target_id: "b".into(),
                step,
            };
            assert_eq!(message.message_type(), DIGEST_MESSAGE_TYPE);
            assert_eq!(Message::decode(&message.encode()).unwrap(), message);
        }
        // A peer that knows the digest but not the sketch: the flag is simply absent.
        let join = Message::Join {
            sender_id: "a".into(),
            supported_protocol_versions: vec!["1".into()],
            metadata: Some(PeerMetadata {
                storage_id: Some("st".into()),
                is_ephemeral: false,
                digest: true,
                sketch: false,
                fetch: false,
            }),
        };
        assert_eq!(Message::decode(&join.encode()).unwrap(), join);
    }

    #[test]
    fn bad_digest_frames_get_clear_errors() {
        let digest = |step: &str, extra: Vec<(&'static str, Value)>| {
            let mut entries = vec![
                ("type", Value::Text(DIGEST_MESSAGE_TYPE.into())),
                ("senderId", Value::Text("a".into())),
                ("targetId", Value::Text("b".into())),
                ("step", Value::Text(step.into())),
            ];
            entries.extend(extra);
            frame(entries)
        };
        let offer = |changed: Value| {
            vec![
                ("count", Value::Integer(3.into())),
                ("data", Value::Bytes(vec![0; 16])),
                ("changed", changed),
            ]
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (digest("later", vec![]), "unknown digest step `later`"),
            (
                digest("offer", offer(Value::Integer((-1).into()))),
                "`changed` is out of range",
            ),
            (
                digest("offer", offer(Value::Text("many".into()))),
                "`changed` is not a non-negative integer",
            ),
            (
                digest(
                    "sketch",
                    vec![
                        ("count", Value::Integer(3.into())),
                        ("total", Value::Bytes(vec![0; 16])),
                        ("data", Value::Bytes(vec![])),
                    ],
                ),
                "missing `seed`",
            ),
            (
                digest(
                    "sketch",
                    vec![
                        ("count", Value::Integer(3.into())),
                        ("seed", Value::Integer(3.into())),
                        ("data", Value::Bytes(vec![])),
                    ],
                ),
                "missing `total`",
            ),
            (digest("decoded", vec![]), "missing `data`"),
        ];
        for (bytes, expected) in cases {
            let error = Message::decode(&bytes).unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }

    #[test]
    fn bad_fetch_frames_get_clear_errors() {
        let fetch = |step: &str, extra: Vec<(&'static str, Value)>| {
            let mut entries = vec![
                ("type", Value::Text(FETCH_MESSAGE_TYPE.into())),
                ("senderId", Value::Text("a".into())),
                ("targetId", Value::Text("b".into())),
                ("step", Value::Text(step.into())),
            ];
            entries.extend(extra);
            frame(entries)
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (fetch("later", vec![]), "unknown fetch step `later`"),
            (fetch("want", vec![]), "missing `data`"),
            (
                fetch("manifest", vec![("count", Value::Integer(3.into()))]),
                "missing `size`",
            ),
            (
                fetch(
                    "manifest",
                    vec![
                        ("count", Value::Integer(3.into())),
                        ("size", Value::Integer((-1).into())),
                    ],
                ),
                "`size` is out of range",
            ),
            (
                fetch("done", vec![("data", Value::Bytes(vec![]))]),
                "missing `plain`",
            ),
            (
                fetch("snapshots", vec![("data", Value::Text("x".into()))]),
                "`data` is not a byte string",
            ),
        ];
        for (bytes, expected) in cases {
            let error = Message::decode(&bytes).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn bad_frames_get_clear_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "not valid CBOR"),
            (vec![0xff, 0x00], "not valid CBOR"),
            (frame(vec![]), "missing `type`"),
            (vec![0x83, 1, 2, 3], "not a CBOR map"),
            (
                frame(vec![
                    ("type", Value::Text("sync".into())),
                    ("senderId", Value::Text("a".into())),
                    ("targetId", Value::Text("b".into())),
                    ("documentId", Value::Text("nope".into())),
                    ("data", Value::Bytes(vec![])),
                ]),
                "bad `documentId`",
            ),
            (
                frame(vec![
                    ("type", Value::Text("sync".into())),
                    ("senderId", Value::Text("a".into())),
                    ("targetId", Value::Text("b".into())),
                    ("documentId", Value::Text(doc().to_string())),
                    ("data", Value::Text("not bytes".into())),
                ]),
                "`data` is not a byte string",
            ),
            (
                frame(vec![
                    ("type", Value::Text("join".into())),
                    ("senderId", Value::Integer(3.into())),
                ]),
                "`senderId` is not a string",
            ),
        ];
        for (bytes, expected) in cases {
            let error = Message::decode(&bytes).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
