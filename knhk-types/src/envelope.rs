//! The signed wire envelope: the only frame that crosses the network.
//!
//! Layout (postcard): version `u8`, kind `u8`, scope varint, sender 32 bytes, timestamp
//! varint, nonce varint, payload length varint + bytes, signature 64 bytes.
//!
//! The signature covers [`SIGNATURE_CONTEXT`] followed by every field but the
//! signature, encoded the same way. The context string and the version and kind bytes
//! make the signature domain-separated: a signature made for one kind or version never
//! verifies as another, and no other signing use of the same key can be replayed here.

use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use serde_big_array::BigArray;

use crate::{AgentId, EnvelopeError, UnixMillis};

/// The protocol version this build speaks and accepts. Version 2 added the scope;
/// version 3 made gossip versions travel as pages ([`crate::VersionPage`]).
pub const PROTOCOL_VERSION: u8 = 3;

/// Domain-separation prefix of every signed envelope.
pub const SIGNATURE_CONTEXT: &[u8] = b"knhk-mesh envelope v2\0";

/// Which instance of a protocol an envelope belongs to: a node runs one gossip
/// instance per group it belongs to (its local group, its region's leaders, its parent
/// level), and the node endpoint routes each frame by (kind, scope). Encoded as a
/// varint: scope 0 costs one byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(pub u32);

impl Scope {
    /// The scope of a node's first (or only) instance of each protocol.
    pub const DEFAULT: Scope = Scope(0);
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Default maximum encoded frame size (1 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// What an envelope carries. Encoded as one byte; unknown bytes are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum MessageKind {
    /// Application point-to-point data.
    Direct = 1,
    /// Gossip push of deltas the receiver lacks.
    GossipPush = 2,
    /// Gossip pull request carrying the requester's version vector or root.
    GossipPull = 3,
    /// Answer to a gossip pull.
    GossipPullReply = 4,
    /// Liveness and round-trip probe.
    Ping = 5,
    /// Answer to a ping.
    Pong = 6,
    /// Membership and failure detection (SWIM probes, acks, indirect probes and the
    /// membership updates they carry).
    Membership = 7,
}

impl MessageKind {
    /// Every kind, in wire order.
    pub const ALL: [MessageKind; 7] = [
        Self::Direct,
        Self::GossipPush,
        Self::GossipPull,
        Self::GossipPullReply,
        Self::Ping,
        Self::Pong,
        Self::Membership,
    ];

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl TryFrom<u8> for MessageKind {
    type Error = EnvelopeError;
    fn try_from(byte: u8) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_u8() == byte)
            .ok_or(EnvelopeError::UnknownKind(byte))
    }
}

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "BigArray")] pub [u8; 64]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, ..] = self.0;
        write!(f, "Signature({a:02x}{b:02x}{c:02x}{d:02x}…)")
    }
}

/// Something that can sign envelopes as one [`AgentId`].
///
/// Implemented for `ed25519_dalek::SigningKey`; key stores and HSM-backed signers can
/// implement it too.
pub trait EnvelopeSigner {
    /// The identity whose signatures this produces.
    fn agent_id(&self) -> AgentId;
    /// Signs `message` (already domain-separated by the caller).
    fn sign_message(&self, message: &[u8]) -> Signature;
}

impl<T: EnvelopeSigner + ?Sized> EnvelopeSigner for &T {
    fn agent_id(&self) -> AgentId {
        (**self).agent_id()
    }

    fn sign_message(&self, message: &[u8]) -> Signature {
        (**self).sign_message(message)
    }
}

impl EnvelopeSigner for SigningKey {
    fn agent_id(&self) -> AgentId {
        AgentId::from_verifying_key(&self.verifying_key())
    }

    fn sign_message(&self, message: &[u8]) -> Signature {
        Signature(self.sign(message).to_bytes())
    }
}

/// The fields of an envelope other than sender, payload and signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnvelopeHeader {
    /// What the payload is.
    pub kind: MessageKind,
    /// Which instance of the kind's protocol it belongs to.
    pub scope: Scope,
    /// Sender's wall clock when it sealed the envelope.
    pub timestamp: UnixMillis,
    /// Per-sender nonce or sequence number, for replay detection.
    pub nonce: u64,
}

impl EnvelopeHeader {
    /// A header of `kind` in [`Scope::DEFAULT`], sent at `timestamp` with `nonce`.
    pub const fn new(kind: MessageKind, timestamp: UnixMillis, nonce: u64) -> Self {
        Self::scoped(kind, Scope::DEFAULT, timestamp, nonce)
    }

    /// A header of `kind` in `scope`, sent at `timestamp` with `nonce`.
    pub const fn scoped(
        kind: MessageKind,
        scope: Scope,
        timestamp: UnixMillis,
        nonce: u64,
    ) -> Self {
        Self {
            kind,
            scope,
            timestamp,
            nonce,
        }
    }
}

/// The signed part, in wire order; shared by encoding and by the signed bytes.
#[derive(Serialize)]
struct SignedFields<'a> {
    version: u8,
    kind: u8,
    scope: u32,
    sender: &'a AgentId,
    timestamp_ms: u64,
    nonce: u64,
    #[serde(with = "serde_bytes")]
    payload: &'a [u8],
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope<'a> {
    version: u8,
    kind: u8,
    scope: u32,
    sender: AgentId,
    timestamp_ms: u64,
    nonce: u64,
    #[serde(borrow, with = "serde_bytes")]
    payload: &'a [u8],
    signature: Signature,
}

/// A decoded envelope that borrows its payload from the frame: no allocation.
///
/// Decoding checks structure only; call [`EnvelopeRef::verify`] before trusting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// Kind, timestamp and nonce.
    pub header: EnvelopeHeader,
    /// Claimed sender.
    pub sender: AgentId,
    /// Payload bytes, borrowed from the frame.
    pub payload: &'a [u8],
    /// Claimed signature.
    pub signature: Signature,
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes a frame without copying the payload.
    ///
    /// Errors: [`EnvelopeError::FrameTooLarge`] if `frame` exceeds `max_frame_bytes`
    /// (checked before anything else), [`EnvelopeError::Malformed`] for truncated or
    /// ill-formed bytes, [`EnvelopeError::TrailingBytes`], [`EnvelopeError::UnsupportedVersion`]
    /// and [`EnvelopeError::UnknownKind`]. Never panics; allocates nothing.
    pub fn decode(frame: &'a [u8], max_frame_bytes: usize) -> Result<Self, EnvelopeError> {
        if frame.len() > max_frame_bytes {
            return Err(EnvelopeError::FrameTooLarge {
                len: frame.len(),
                max: max_frame_bytes,
            });
        }
        let (wire, rest) = postcard::take_from_bytes::<WireEnvelope<'a>>(frame)
            .map_err(|reason| EnvelopeError::Malformed { reason })?;
        if !rest.is_empty() {
            return Err(EnvelopeError::TrailingBytes { extra: rest.len() });
        }
        if wire.version != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnsupportedVersion {
                found: wire.version,
                supported: PROTOCOL_VERSION,
            });
        }
        let envelope = Self {
            header: EnvelopeHeader::scoped(
                MessageKind::try_from(wire.kind)?,
                Scope(wire.scope),
                UnixMillis(wire.timestamp_ms),
                wire.nonce,
            ),
            sender: wire.sender,
            payload: wire.payload,
            signature: wire.signature,
        };
        // postcard accepts over-long varints; a frame must be the one canonical
        // encoding of its fields, so that no bit flip yields an equal envelope.
        if envelope.encoded_len() != frame.len() {
            return Err(EnvelopeError::Malformed {
                reason: postcard::Error::DeserializeBadVarint,
            });
        }
        Ok(envelope)
    }

    /// The exact bytes the signature covers: [`SIGNATURE_CONTEXT`] then the signed
    /// fields in wire encoding.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(&self.header, &self.sender, self.payload)
    }

    /// Checks the signature against the sender's key (strict ed25519: rejects
    /// non-canonical and small-order encodings).
    ///
    /// Errors: [`EnvelopeError::InvalidSenderKey`] if the sender bytes are not a valid
    /// point, [`EnvelopeError::BadSignature`] if the signature does not verify.
    /// Costs one ed25519 verification (tens of microseconds); cache results upstream.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        let key = self
            .sender
            .verifying_key()
            .ok_or(EnvelopeError::InvalidSenderKey)?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify_strict(&self.signed_bytes(), &signature)
            .map_err(|_| EnvelopeError::BadSignature)
    }

    /// Length of this envelope's wire encoding.
    pub fn encoded_len(&self) -> usize {
        postcard::experimental::serialized_size(&self.wire()).unwrap_or(usize::MAX)
    }

    /// Copies the payload into an owned [`Envelope`].
    pub fn to_owned(&self) -> Envelope {
        Envelope {
            header: self.header,
            sender: self.sender,
            payload: self.payload.to_vec(),
            signature: self.signature,
        }
    }

    fn wire(&self) -> WireEnvelope<'a> {
        WireEnvelope {
            version: PROTOCOL_VERSION,
            kind: self.header.kind.as_u8(),
            scope: self.header.scope.0,
            sender: self.sender,
            timestamp_ms: self.header.timestamp.0,
            nonce: self.header.nonce,
            payload: self.payload,
            signature: self.signature,
        }
    }
}

/// A signed envelope that owns its payload.
///
/// Built by [`Envelope::sign`] (always correctly signed) or [`Envelope::decode`]
/// (structurally valid; call [`Envelope::verify`] before trusting it). Fields are
/// read-only so a signed envelope cannot be altered by accident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    header: EnvelopeHeader,
    sender: AgentId,
    payload: Vec<u8>,
    signature: Signature,
}

impl Envelope {
    /// Seals `payload` under `header`, signed by `signer`. Costs one ed25519 signature.
    pub fn sign(signer: &impl EnvelopeSigner, header: EnvelopeHeader, payload: Vec<u8>) -> Self {
        let sender = signer.agent_id();
        let signature = signer.sign_message(&signed_bytes(&header, &sender, &payload));
        Self {
            header,
            sender,
            payload,
            signature,
        }
    }

    /// Seals `payload` under `header`, signed by `signer`, straight into its wire
    /// encoding (what [`Envelope::sign`] then [`Envelope::encode`] give, without the
    /// intermediate copy of the payload). Costs one signature.
    pub fn seal<S: EnvelopeSigner + ?Sized>(
        signer: &S,
        header: EnvelopeHeader,
        payload: &[u8],
    ) -> Vec<u8> {
        let sender = signer.agent_id();
        let signature = signer.sign_message(&signed_bytes(&header, &sender, payload));
        let envelope = EnvelopeRef {
            header,
            sender,
            payload,
            signature,
        };
        // Serializing these plain fields into a Vec cannot fail.
        postcard::to_allocvec(&envelope.wire()).unwrap_or_default()
    }

    /// Decodes a frame into an owned envelope; see [`EnvelopeRef::decode`] for the
    /// checks and errors. Allocates at most one payload copy, which is no longer than
    /// the frame (and so never more than `max_frame_bytes`).
    pub fn decode(frame: &[u8], max_frame_bytes: usize) -> Result<Self, EnvelopeError> {
        EnvelopeRef::decode(frame, max_frame_bytes).map(|envelope| envelope.to_owned())
    }

    /// The wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain fields into a Vec cannot fail.
        postcard::to_allocvec(&self.as_ref().wire()).unwrap_or_default()
    }

    /// A borrowed view, for verification without copying.
    pub fn as_ref(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            header: self.header,
            sender: self.sender,
            payload: &self.payload,
            signature: self.signature,
        }
    }

    /// See [`EnvelopeRef::verify`].
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        self.as_ref().verify()
    }

    /// The header (kind, timestamp, nonce).
    pub fn header(&self) -> EnvelopeHeader {
        self.header
    }

    /// The message kind.
    pub fn kind(&self) -> MessageKind {
        self.header.kind
    }

    /// The claimed sender.
    pub fn sender(&self) -> AgentId {
        self.sender
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature.
    pub fn signature(&self) -> Signature {
        self.signature
    }

    /// Consumes the envelope, returning its payload.
    pub fn into_payload(self) -> Vec<u8> {
        self.payload
    }
}

fn signed_bytes(header: &EnvelopeHeader, sender: &AgentId, payload: &[u8]) -> Vec<u8> {
    let fields = SignedFields {
        version: PROTOCOL_VERSION,
        kind: header.kind.as_u8(),
        scope: header.scope.0,
        sender,
        timestamp_ms: header.timestamp.0,
        nonce: header.nonce,
        payload,
    };
    let mut bytes = Vec::with_capacity(SIGNATURE_CONTEXT.len() + 64 + payload.len());
    bytes.extend_from_slice(SIGNATURE_CONTEXT);
    // Extending a Vec cannot fail; on the impossible error the signature simply
    // will not verify.
    postcard::to_extend(&fields, bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn sample(kind: MessageKind) -> Envelope {
        Envelope::sign(
            &key(1),
            EnvelopeHeader::new(kind, UnixMillis::VIRTUAL_START, 42),
            b"payload".to_vec(),
        )
    }

    #[test]
    fn signed_envelope_round_trips_and_verifies() {
        let envelope = sample(MessageKind::GossipPush);
        let decoded = Envelope::decode(&envelope.encode(), DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(decoded, envelope);
        decoded.verify().unwrap();
        assert_eq!(decoded.sender(), key(1).agent_id());
    }

    #[test]
    fn seal_equals_sign_then_encode() {
        let header = EnvelopeHeader::scoped(MessageKind::Ping, Scope(7), UnixMillis(5), 3);
        let sealed = Envelope::seal(&key(2), header, b"abc");
        let signed = Envelope::sign(&key(2), header, b"abc".to_vec()).encode();
        assert_eq!(sealed, signed);
    }

    #[test]
    fn kind_byte_is_covered_by_the_signature() {
        let envelope = sample(MessageKind::GossipPush);
        let mut bytes = envelope.encode();
        assert_eq!(bytes[1], MessageKind::GossipPush.as_u8());
        bytes[1] = MessageKind::GossipPull.as_u8();
        let relabelled = Envelope::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(relabelled.verify(), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn version_and_kind_bytes_are_checked() {
        let mut bytes = sample(MessageKind::Ping).encode();
        bytes[0] = 1;
        assert_eq!(
            EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES),
            Err(EnvelopeError::UnsupportedVersion {
                found: 1,
                supported: PROTOCOL_VERSION
            })
        );
        let mut bytes = sample(MessageKind::Ping).encode();
        bytes[1] = 200;
        assert_eq!(
            EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES),
            Err(EnvelopeError::UnknownKind(200))
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_decoding() {
        let bytes = sample(MessageKind::Direct).encode();
        assert_eq!(
            EnvelopeRef::decode(&bytes, bytes.len() - 1),
            Err(EnvelopeError::FrameTooLarge {
                len: bytes.len(),
                max: bytes.len() - 1
            })
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = sample(MessageKind::Direct).encode();
        bytes.push(0);
        assert_eq!(
            EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES),
            Err(EnvelopeError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn over_long_varint_is_refused() {
        // nonce 42 encoded canonically is one byte 0x2a; 0xaa 0x00 is the same value.
        let envelope = sample(MessageKind::Direct);
        let canonical = envelope.encode();
        let nonce_at = 3 + 32 + 6; // version, kind, scope, sender, 6-byte timestamp varint
        assert_eq!(canonical[nonce_at], 42);
        let mut long = canonical[..nonce_at].to_vec();
        long.extend_from_slice(&[0xaa, 0x00]);
        long.extend_from_slice(&canonical[nonce_at + 1..]);
        assert!(matches!(
            EnvelopeRef::decode(&long, DEFAULT_MAX_FRAME_BYTES),
            Err(EnvelopeError::Malformed { .. })
        ));
    }

    #[test]
    fn invalid_sender_point_is_reported_as_such() {
        let envelope = sample(MessageKind::Direct);
        let mut bytes = envelope.encode();
        bytes[3..35].copy_from_slice(&{
            let mut bad = [0u8; 32];
            bad[0] = 2;
            bad
        });
        let decoded = EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(decoded.verify(), Err(EnvelopeError::InvalidSenderKey));
    }

    #[test]
    fn signed_bytes_start_with_the_context() {
        let envelope = sample(MessageKind::Pong);
        let signed = envelope.as_ref().signed_bytes();
        assert!(signed.starts_with(SIGNATURE_CONTEXT));
        assert!(signed.ends_with(b"payload"));
    }

    #[test]
    fn scope_is_carried_and_covered_by_the_signature() {
        let header = EnvelopeHeader::scoped(
            MessageKind::GossipPull,
            Scope(300),
            UnixMillis::VIRTUAL_START,
            9,
        );
        let envelope = Envelope::sign(&key(1), header, b"p".to_vec());
        let mut bytes = envelope.encode();
        let decoded = EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(decoded.header.scope, Scope(300));
        decoded.verify().unwrap();
        // Scope 300 is the varint 0xac 0x02; 0xad 0x02 is scope 301.
        assert_eq!(&bytes[2..4], &[0xac, 0x02]);
        bytes[2] = 0xad;
        let moved = EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(moved.header.scope, Scope(301));
        assert_eq!(moved.verify(), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn every_kind_byte_round_trips() {
        for kind in MessageKind::ALL {
            assert_eq!(MessageKind::try_from(kind.as_u8()), Ok(kind));
        }
        assert_eq!(MessageKind::try_from(0), Err(EnvelopeError::UnknownKind(0)));
    }
}
