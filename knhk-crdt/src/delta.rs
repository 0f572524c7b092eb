//! [`Delta`]: what one state sends another, and its wire encoding.

use serde::{Deserialize, Serialize};

use knhk_types::AgentId;

use crate::entry::SignedEntry;
use crate::error::CrdtError;

/// The versions of one writer a delta covers: counters `after + 1 ..= through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterRange {
    /// The writer.
    pub writer: AgentId,
    /// The receiver already had up to this counter (exclusive start).
    pub after: u64,
    /// The delta brings the receiver up to this counter (inclusive end).
    pub through: u64,
}

/// Entries a peer lacks, and the version ranges they bring it. Only writers that
/// changed are listed, so a delta's size never grows with the number of nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// One range per writer that advanced.
    pub ranges: Vec<WriterRange>,
    /// The still-winning entries of those ranges, plus each range's proof entry.
    pub entries: Vec<SignedEntry>,
}

const RAW: u8 = 0;
const ZSTD: u8 = 1;
const ZSTD_LEVEL: i32 = 3;

/// Default compression threshold for [`Delta::encode`]: 512 bytes.
pub const DEFAULT_COMPRESS_ABOVE: usize = 512;

impl Delta {
    /// True if the delta carries nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.entries.is_empty()
    }

    /// Wire encoding: one flag byte, then postcard; when the postcard body is longer than
    /// `compress_above` bytes and zstd makes it smaller, the body is zstd-compressed and
    /// the flag says so. Decoding is transparent either way.
    pub fn encode(&self, compress_above: usize) -> Vec<u8> {
        let body = postcard::to_allocvec(self).unwrap_or_default();
        if body.len() > compress_above
            && let Ok(compressed) = zstd::bulk::compress(&body, ZSTD_LEVEL)
            && compressed.len() < body.len()
        {
            let mut out = Vec::with_capacity(compressed.len() + 1);
            out.push(ZSTD);
            out.extend_from_slice(&compressed);
            return out;
        }
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(RAW);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes [`Delta::encode`] output, refusing anything whose decoded body would
    /// exceed `max_decoded_bytes` (checked during decompression, so a zip bomb costs at
    /// most that much memory).
    ///
    /// Errors: [`CrdtError::DeltaTooLarge`], [`CrdtError::Malformed`] (unknown flag,
    /// corrupt zstd, bad postcard, trailing bytes). Never panics.
    pub fn decode(bytes: &[u8], max_decoded_bytes: usize) -> Result<Self, CrdtError> {
        let (&flag, body) = bytes
            .split_first()
            .ok_or_else(|| CrdtError::Malformed("empty delta".into()))?;
        let decompressed;
        let body = match flag {
            RAW => body,
            ZSTD => {
                // Allocate what the frame declares (when it does and it is within the
                // limit), not the limit itself.
                let declared = zstd::zstd_safe::get_frame_content_size(body).ok().flatten();
                let capacity = match declared {
                    Some(size) if size > max_decoded_bytes as u64 => {
                        return Err(CrdtError::DeltaTooLarge {
                            len: usize::try_from(size).unwrap_or(usize::MAX),
                            max: max_decoded_bytes,
                        });
                    }
                    Some(size) => usize::try_from(size).unwrap_or(max_decoded_bytes),
                    None => max_decoded_bytes,
                };
                decompressed = zstd::bulk::decompress(body, capacity).map_err(|e| {
                    if e.to_string().contains("Destination buffer is too small") {
                        CrdtError::DeltaTooLarge {
                            len: max_decoded_bytes + 1,
                            max: max_decoded_bytes,
                        }
                    } else {
                        CrdtError::Malformed(format!("zstd: {e}"))
                    }
                })?;
                &decompressed[..]
            }
            other => return Err(CrdtError::Malformed(format!("unknown delta flag {other}"))),
        };
        if body.len() > max_decoded_bytes {
            return Err(CrdtError::DeltaTooLarge {
                len: body.len(),
                max: max_decoded_bytes,
            });
        }
        let (delta, rest) = postcard::take_from_bytes::<Delta>(body)
            .map_err(|e| CrdtError::Malformed(format!("postcard: {e}")))?;
        if !rest.is_empty() {
            return Err(CrdtError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_security::NodeKey;

    fn delta_with(values: usize, value: &[u8]) -> Delta {
        let key = NodeKey::from_seed([1; 32]);
        let entries: Vec<_> = (1..=values as u64)
            .map(|n| {
                SignedEntry::sign(
                    &key,
                    format!("agent/{n}/status"),
                    Some(value.to_vec()),
                    n,
                    n,
                )
            })
            .collect();
        Delta {
            ranges: vec![WriterRange {
                writer: key.agent_id(),
                after: 0,
                through: values as u64,
            }],
            entries,
        }
    }

    #[test]
    fn small_deltas_stay_raw_and_large_ones_compress() {
        let small = delta_with(1, b"ok");
        let encoded = small.encode(DEFAULT_COMPRESS_ABOVE);
        assert_eq!(encoded[0], RAW);
        assert_eq!(Delta::decode(&encoded, 1 << 20).unwrap(), small);

        let large = delta_with(
            50,
            br#"{"state":"running","load":0.42,"region":"eu-west-1"}"#,
        );
        let encoded = large.encode(DEFAULT_COMPRESS_ABOVE);
        assert_eq!(encoded[0], ZSTD);
        assert!(encoded.len() < postcard::to_allocvec(&large).unwrap().len());
        assert_eq!(Delta::decode(&encoded, 1 << 20).unwrap(), large);
    }

    #[test]
    fn decompression_is_bounded() {
        let large = delta_with(50, &[0u8; 1000]);
        let encoded = large.encode(0);
        assert_eq!(encoded[0], ZSTD);
        assert!(matches!(
            Delta::decode(&encoded, 1_000),
            Err(CrdtError::DeltaTooLarge { max: 1_000, .. })
        ));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for bytes in [
            &[][..],
            &[9, 1, 2][..],
            &[RAW, 0xff, 0xff][..],
            &[ZSTD, 1, 2, 3][..],
        ] {
            assert!(Delta::decode(bytes, 1 << 20).is_err(), "{bytes:?}");
        }
        let mut trailing = delta_with(1, b"x").encode(usize::MAX);
        trailing.push(0);
        assert!(matches!(
            Delta::decode(&trailing, 1 << 20),
            Err(CrdtError::Malformed(_))
        ));
    }
}
