//! The spool's on-disk format: records, segment headers, and the cursor and counters slots
//! (the layout is documented in the module above). Pure encoding and decoding: nothing here
//! touches a file, and nothing here may panic on the bytes it is given, whatever they are.

use super::FORMAT_VERSION;

/// The first format version, written by earlier releases: still read, never written.
pub(super) const LEGACY_VERSION: u32 = 1;

const SEGMENT_MAGIC: u32 = u32::from_le_bytes(*b"PGSS");
pub(super) const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PGSR");
/// Magic of the cursor file's slots (and of the whole version 1 cursor file).
pub(super) const CURSOR_MAGIC: u32 = u32::from_le_bytes(*b"PGSC");
/// Magic of the counters file's slots.
pub(super) const COUNTERS_MAGIC: u32 = u32::from_le_bytes(*b"PGSN");

pub(super) const SEGMENT_HEADER_LEN: usize = 20;
/// Record header of format 2: magic, length, seq, payload crc, header crc.
pub(super) const RECORD_HEADER_LEN: usize = 24;
/// Record header of format 1: magic, length, seq, crc over seq and payload.
pub(super) const LEGACY_RECORD_HEADER_LEN: usize = 20;

/// Bytes used in one state slot: magic, version, generation, acked_through, the seven
/// counters, crc.
const SLOT_LEN: usize = 4 + 4 + 8 + 8 + 7 * 8 + 4;
/// Distance between the two slots of a state file. Each slot has a 512-byte sector of its own,
/// so that writing one never touches the bytes of the other.
pub(super) const SLOT_STRIDE: usize = 512;
/// Length of a state file (cursor or counters): two slots.
pub(super) const STATE_FILE_LEN: usize = 2 * SLOT_STRIDE;
/// Length of the version 1 cursor file.
const LEGACY_CURSOR_LEN: usize = 44;

/// Counters that must survive restarts, and a lost cursor (they are kept in both state files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Counters {
    pub(super) dropped_batches: u64,
    pub(super) dropped_bytes: u64,
    /// Of `dropped_batches`, those dropped because the file system was full.
    pub(super) dropped_for_disk_full: u64,
    pub(super) dead_lettered_batches: u64,
    pub(super) lost_batches: u64,
    pub(super) dead_letters_removed: u64,
    pub(super) cursor_losses: u64,
}

impl Counters {
    /// Field by field maximum: counters only grow, so of two copies the larger value is the
    /// later one.
    pub(super) fn max(self, other: Counters) -> Counters {
        Counters {
            dropped_batches: self.dropped_batches.max(other.dropped_batches),
            dropped_bytes: self.dropped_bytes.max(other.dropped_bytes),
            dropped_for_disk_full: self.dropped_for_disk_full.max(other.dropped_for_disk_full),
            dead_lettered_batches: self.dead_lettered_batches.max(other.dead_lettered_batches),
            lost_batches: self.lost_batches.max(other.lost_batches),
            dead_letters_removed: self.dead_letters_removed.max(other.dead_letters_removed),
            cursor_losses: self.cursor_losses.max(other.cursor_losses),
        }
    }

    fn fields(&self) -> [u64; 7] {
        [
            self.dropped_batches,
            self.dropped_bytes,
            self.dropped_for_disk_full,
            self.dead_lettered_batches,
            self.lost_batches,
            self.dead_letters_removed,
            self.cursor_losses,
        ]
    }

    fn from_fields(f: [u64; 7]) -> Counters {
        Counters {
            dropped_batches: f[0],
            dropped_bytes: f[1],
            dropped_for_disk_full: f[2],
            dead_lettered_batches: f[3],
            lost_batches: f[4],
            dead_letters_removed: f[5],
            cursor_losses: f[6],
        }
    }
}

/// The durable state besides the segments: how far the spool has been consumed, and the
/// counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    /// Every batch with a seq at or below this is gone (acked, dead-lettered, dropped or set
    /// aside as lost).
    pub(super) acked_through: u64,
    pub(super) counters: Counters,
}

/// Why a header or state file could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decode {
    Corrupt(&'static str),
    /// A newer format: refused, never misread.
    Version(u32),
}

/// Checks the version field shared by every file. Checked before lengths and checksums: a
/// newer layout may differ in both, and it must be refused rather than repaired.
fn check_version(found: Option<u32>, oldest: u32) -> Result<u32, Decode> {
    match found {
        Some(v) if (oldest..=FORMAT_VERSION).contains(&v) => Ok(v),
        Some(v) if v > FORMAT_VERSION => Err(Decode::Version(v)),
        _ => Err(Decode::Corrupt("bad format version")),
    }
}

/// One slot of a state file: `generation` orders the two slots, the newest valid one wins.
pub(super) fn encode_slot(magic: u32, generation: u64, cursor: &Cursor) -> [u8; SLOT_STRIDE] {
    let mut out = [0u8; SLOT_STRIDE];
    out[0..4].copy_from_slice(&magic.to_le_bytes());
    out[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..24].copy_from_slice(&cursor.acked_through.to_le_bytes());
    for (i, value) in cursor.counters.fields().iter().enumerate() {
        out[24 + 8 * i..32 + 8 * i].copy_from_slice(&value.to_le_bytes());
    }
    let crc = crc32fast::hash(&out[..SLOT_LEN - 4]);
    out[SLOT_LEN - 4..SLOT_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes one slot into its generation and state.
fn decode_slot(magic: u32, bytes: &[u8]) -> Result<(u64, Cursor), Decode> {
    if le_u32(bytes, 0) != Some(magic) {
        return Err(Decode::Corrupt("bad magic"));
    }
    check_version(le_u32(bytes, 4), FORMAT_VERSION)?;
    let (Some(body), Some(crc)) = (bytes.get(..SLOT_LEN - 4), le_u32(bytes, SLOT_LEN - 4)) else {
        return Err(Decode::Corrupt("short slot"));
    };
    if crc32fast::hash(body) != crc {
        return Err(Decode::Corrupt("checksum mismatch"));
    }
    let field = |at| le_u64(bytes, at).ok_or(Decode::Corrupt("short slot"));
    let mut counters = [0u64; 7];
    for (i, value) in counters.iter_mut().enumerate() {
        *value = field(24 + 8 * i)?;
    }
    Ok((
        field(8)?,
        Cursor {
            acked_through: field(16)?,
            counters: Counters::from_fields(counters),
        },
    ))
}

/// What a state file holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DecodedState {
    pub(super) cursor: Cursor,
    /// Generation of the slot it came from (0 for a version 1 cursor).
    pub(super) generation: u64,
    /// It came from a version 1 cursor file, which is rewritten in the current format.
    pub(super) legacy: bool,
    /// One slot was unreadable (a torn write, or damage): the state is the other slot's.
    pub(super) damaged_slot: Option<&'static str>,
}

/// Decodes a state file: the newest valid of its two slots, or (for the cursor) a version 1
/// cursor file.
pub(super) fn decode_state(magic: u32, bytes: &[u8]) -> Result<DecodedState, Decode> {
    if magic == CURSOR_MAGIC && le_u32(bytes, 4) == Some(LEGACY_VERSION) {
        return decode_legacy_cursor(bytes).map(|cursor| DecodedState {
            cursor,
            generation: 0,
            legacy: true,
            damaged_slot: None,
        });
    }
    let slots = [
        bytes.get(..SLOT_STRIDE).unwrap_or_default(),
        bytes.get(SLOT_STRIDE..STATE_FILE_LEN).unwrap_or_default(),
    ];
    let decoded = slots.map(|slot| decode_slot(magic, slot));
    if let Some(Err(Decode::Version(found))) = decoded
        .iter()
        .find(|d| matches!(d, Err(Decode::Version(_))))
    {
        return Err(Decode::Version(*found));
    }
    if bytes.len() != STATE_FILE_LEN {
        return Err(Decode::Corrupt("wrong length"));
    }
    match decoded {
        [Ok(a), Ok(b)] => {
            let (generation, cursor) = if b.0 > a.0 { b } else { a };
            Ok(DecodedState {
                cursor,
                generation,
                legacy: false,
                damaged_slot: None,
            })
        }
        [Ok((generation, cursor)), Err(Decode::Corrupt(why))]
        | [Err(Decode::Corrupt(why)), Ok((generation, cursor))] => Ok(DecodedState {
            cursor,
            generation,
            legacy: false,
            damaged_slot: Some(why),
        }),
        [Err(Decode::Corrupt(why)), Err(_)] | [Err(_), Err(Decode::Corrupt(why))] => {
            Err(Decode::Corrupt(why))
        }
        [Err(Decode::Version(v)), _] | [_, Err(Decode::Version(v))] => Err(Decode::Version(v)),
    }
}

/// The version 1 cursor: magic, version, acked_through, dropped batches, dropped bytes,
/// dead-lettered batches, crc over the 40 bytes before it.
fn decode_legacy_cursor(bytes: &[u8]) -> Result<Cursor, Decode> {
    if le_u32(bytes, 0) != Some(CURSOR_MAGIC) {
        return Err(Decode::Corrupt("bad magic"));
    }
    if bytes.len() != LEGACY_CURSOR_LEN {
        return Err(Decode::Corrupt("wrong length"));
    }
    let body = &bytes[..LEGACY_CURSOR_LEN - 4];
    if le_u32(bytes, LEGACY_CURSOR_LEN - 4) != Some(crc32fast::hash(body)) {
        return Err(Decode::Corrupt("checksum mismatch"));
    }
    let field = |at| le_u64(bytes, at).ok_or(Decode::Corrupt("wrong length"));
    Ok(Cursor {
        acked_through: field(8)?,
        counters: Counters {
            dropped_batches: field(16)?,
            dropped_bytes: field(24)?,
            dead_lettered_batches: field(32)?,
            ..Counters::default()
        },
    })
}

pub(super) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    encode_segment_header_version(FORMAT_VERSION, first_seq)
}

fn encode_segment_header_version(version: u32, first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    out[0..4].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
    out[4..8].copy_from_slice(&version.to_le_bytes());
    out[8..16].copy_from_slice(&first_seq.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header and returns its format version and the first seq it names.
pub(super) fn decode_segment_header(bytes: &[u8]) -> Result<(u32, u64), Decode> {
    if le_u32(bytes, 0) != Some(SEGMENT_MAGIC) {
        return Err(Decode::Corrupt("bad segment magic"));
    }
    let version = check_version(le_u32(bytes, 4), LEGACY_VERSION)?;
    let (Some(first_seq), Some(crc), Some(body)) =
        (le_u64(bytes, 8), le_u32(bytes, 16), bytes.get(..16))
    else {
        return Err(Decode::Corrupt("short header"));
    };
    if crc32fast::hash(body) != crc {
        return Err(Decode::Corrupt("header checksum mismatch"));
    }
    Ok((version, first_seq))
}

/// The record header length of a segment format version.
pub(super) fn record_header_len(version: u32) -> usize {
    if version == LEGACY_VERSION {
        LEGACY_RECORD_HEADER_LEN
    } else {
        RECORD_HEADER_LEN
    }
}

pub(super) fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + payload.len());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// One record read from the front of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    Record {
        seq: u64,
        payload: &'a [u8],
    },
    /// The header is intact (so the seq and the extent are known) but the payload fails its
    /// checksum. Only format 2 can tell this apart from `Invalid`.
    Damaged {
        seq: u64,
        record_len: usize,
    },
    /// The slice ends before the record does. `seq` is known when the header is intact (format
    /// 2): a record torn by a crash after its header was written.
    Incomplete {
        seq: Option<u64>,
    },
    /// Not the start of a record.
    Invalid(&'static str),
}

/// Parses the record at the start of `bytes`, in the record format of segment `version`.
pub(super) fn parse_record(version: u32, bytes: &[u8]) -> Parsed<'_> {
    if version == LEGACY_VERSION {
        return parse_legacy_record(bytes);
    }
    match le_u32(bytes, 0) {
        None => return Parsed::Incomplete { seq: None },
        Some(RECORD_MAGIC) => {}
        Some(_) => return Parsed::Invalid("bad record magic"),
    }
    let (Some(len), Some(seq), Some(payload_crc), Some(header_crc), Some(header)) = (
        le_u32(bytes, 4),
        le_u64(bytes, 8),
        le_u32(bytes, 16),
        le_u32(bytes, 20),
        bytes.get(..20),
    ) else {
        return Parsed::Incomplete { seq: None };
    };
    if crc32fast::hash(header) != header_crc {
        return Parsed::Invalid("record header checksum mismatch");
    }
    let record_len = RECORD_HEADER_LEN + len as usize;
    let Some(payload) = bytes.get(RECORD_HEADER_LEN..record_len) else {
        return Parsed::Incomplete { seq: Some(seq) };
    };
    if crc32fast::hash(payload) != payload_crc {
        return Parsed::Damaged { seq, record_len };
    }
    Parsed::Record { seq, payload }
}

fn parse_legacy_record(bytes: &[u8]) -> Parsed<'_> {
    match le_u32(bytes, 0) {
        None => return Parsed::Incomplete { seq: None },
        Some(RECORD_MAGIC) => {}
        Some(_) => return Parsed::Invalid("bad record magic"),
    }
    let (Some(len), Some(seq), Some(crc)) = (le_u32(bytes, 4), le_u64(bytes, 8), le_u32(bytes, 16))
    else {
        return Parsed::Incomplete { seq: None };
    };
    let Some(payload) =
        bytes.get(LEGACY_RECORD_HEADER_LEN..LEGACY_RECORD_HEADER_LEN + len as usize)
    else {
        return Parsed::Incomplete { seq: None };
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        // The crc also covers the seq, so nothing in this record can be trusted.
        return Parsed::Invalid("checksum mismatch");
    }
    Parsed::Record { seq, payload }
}

pub(super) fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

pub(super) fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let field = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Encoders of format version 1, as the previous release wrote it: for tests that build old
/// spools byte by byte (the checked-in `testdata/v1-spool` was written by that release itself).
#[cfg(test)]
pub(super) mod legacy {
    use super::*;

    pub(in super::super) fn encode_segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
        encode_segment_header_version(LEGACY_VERSION, first_seq)
    }

    pub(in super::super) fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(payload);
        let mut out = Vec::with_capacity(LEGACY_RECORD_HEADER_LEN + payload.len());
        out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&hasher.finalize().to_le_bytes());
        out.extend_from_slice(payload);
        out
    }
}
