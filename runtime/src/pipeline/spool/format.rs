//! The spool's on-disk format: records, segment headers and the cursor.

use super::FORMAT_VERSION;

pub(super) const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"PGSS");
pub(super) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PGSR");
pub(super) const CURSOR_MAGIC: u32 = u32::from_le_bytes(*b"PGSC");
pub(super) const SEGMENT_HEADER_LEN: usize = 20;
pub(super) const RECORD_HEADER_LEN: usize = 20;
pub(super) const CURSOR_LEN: usize = 44;

/// The durable state besides the segments: how far the spool has been consumed, and the
/// counters that must survive a restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    /// Every batch with a seq at or below this is gone (acked, dead-lettered or dropped).
    pub(super) acked_through: u64,
    pub(super) dropped_batches: u64,
    pub(super) dropped_bytes: u64,
    pub(super) dead_lettered_batches: u64,
}

impl Cursor {
    pub(super) fn encode(&self) -> [u8; CURSOR_LEN] {
        let mut out = [0u8; CURSOR_LEN];
        out[0..4].copy_from_slice(&CURSOR_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.acked_through.to_le_bytes());
        out[16..24].copy_from_slice(&self.dropped_batches.to_le_bytes());
        out[24..32].copy_from_slice(&self.dropped_bytes.to_le_bytes());
        out[32..40].copy_from_slice(&self.dead_lettered_batches.to_le_bytes());
        let crc = crc32fast::hash(&out[..CURSOR_LEN - 4]);
        out[CURSOR_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Cursor, Decode> {
        if le_u32(bytes, 0) != Some(CURSOR_MAGIC) {
            return Err(Decode::Corrupt("bad magic"));
        }
        match le_u32(bytes, 4) {
            Some(FORMAT_VERSION) => {}
            // Checked before the length and checksum: a newer layout may differ in both, and
            // it must be refused rather than reset.
            Some(found) if found > FORMAT_VERSION => return Err(Decode::Version(found)),
            _ => return Err(Decode::Corrupt("bad format version")),
        }
        if bytes.len() != CURSOR_LEN {
            return Err(Decode::Corrupt("wrong length"));
        }
        let body = &bytes[..CURSOR_LEN - 4];
        if le_u32(bytes, CURSOR_LEN - 4) != Some(crc32fast::hash(body)) {
            return Err(Decode::Corrupt("checksum mismatch"));
        }
        let field = |at| le_u64(bytes, at).ok_or(Decode::Corrupt("wrong length"));
        Ok(Cursor {
            acked_through: field(8)?,
            dropped_batches: field(16)?,
            dropped_bytes: field(24)?,
            dead_lettered_batches: field(32)?,
        })
    }
}

/// Why a header or cursor could not be used.
pub(super) enum Decode {
    Corrupt(&'static str),
    Version(u32),
}

pub(super) fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&record_crc(seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

pub(super) fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// One record read from the front of a byte slice.
pub(super) enum Parsed<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
    },
    /// The slice ends before the record does.
    Torn,
    Corrupt(&'static str),
}

pub(super) fn parse_record(bytes: &[u8]) -> Parsed<'_> {
    let (Some(magic), Some(len), Some(seq), Some(crc)) = (
        le_u32(bytes, 0),
        le_u32(bytes, 4),
        le_u64(bytes, 8),
        le_u32(bytes, 16),
    ) else {
        return Parsed::Torn;
    };
    if magic != RECORD_MAGIC {
        return Parsed::Corrupt("bad record magic");
    }
    let Some(payload) = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + len as usize) else {
        return Parsed::Torn;
    };
    if record_crc(seq, payload) != crc {
        return Parsed::Corrupt("checksum mismatch");
    }
    Parsed::Record { seq, payload }
}

pub(super) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header and returns the first seq it names.
pub(super) fn decode_segment_header(bytes: &[u8]) -> Result<u64, Decode> {
    if le_u32(bytes, 0) != Some(SEGMENT_MAGIC) {
        return Err(Decode::Corrupt("bad segment magic"));
    }
    match le_u32(bytes, 4) {
        Some(FORMAT_VERSION) => {}
        Some(found) if found > FORMAT_VERSION => return Err(Decode::Version(found)),
        _ => return Err(Decode::Corrupt("bad format version")),
    }
    let (Some(first_seq), Some(crc), Some(body)) =
        (le_u64(bytes, 8), le_u32(bytes, 16), bytes.get(..16))
    else {
        return Err(Decode::Corrupt("short header"));
    };
    if crc32fast::hash(body) != crc {
        return Err(Decode::Corrupt("header checksum mismatch"));
    }
    Ok(first_seq)
}

pub(super) fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

pub(super) fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}
