//! The on-disk layout, byte by byte, as the module documentation states it.

use super::*;

#[test]
fn a_record_is_laid_out_as_documented() {
    let payload = b"{\"a\":1}";
    let record = encode_record(0x0102_0304_0506_0708, payload);
    assert_eq!(record.len(), RECORD_HEADER_LEN + payload.len());
    assert_eq!(&record[0..4], b"PGSR");
    assert_eq!(record[4..8], (payload.len() as u32).to_le_bytes());
    assert_eq!(record[8..16], 0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(record[16..20], crc32fast::hash(payload).to_le_bytes());
    assert_eq!(record[20..24], crc32fast::hash(&record[..20]).to_le_bytes());
    assert_eq!(&record[24..], payload);
    assert_eq!(
        parse_record(FORMAT_VERSION, &record),
        Parsed::Record {
            seq: 0x0102_0304_0506_0708,
            payload
        }
    );
    // Torn anywhere: incomplete, with the seq once the header is whole.
    for cut in 0..record.len() {
        let expected = if cut < RECORD_HEADER_LEN {
            Parsed::Incomplete { seq: None }
        } else {
            Parsed::Incomplete {
                seq: Some(0x0102_0304_0506_0708),
            }
        };
        assert_eq!(
            parse_record(FORMAT_VERSION, &record[..cut]),
            expected,
            "{cut}"
        );
    }
}

#[test]
fn a_segment_header_is_laid_out_as_documented() {
    let header = encode_segment_header(42);
    assert_eq!(&header[0..4], b"PGSS");
    assert_eq!(header[4..8], FORMAT_VERSION.to_le_bytes());
    assert_eq!(header[8..16], 42u64.to_le_bytes());
    assert_eq!(header[16..20], crc32fast::hash(&header[..16]).to_le_bytes());
    assert_eq!(decode_segment_header(&header), Ok((FORMAT_VERSION, 42)));
    assert_eq!(
        decode_segment_header(&legacy::encode_segment_header(42)),
        Ok((LEGACY_VERSION, 42))
    );
}

#[test]
fn a_state_slot_is_laid_out_as_documented() {
    let cursor = Cursor {
        acked_through: 9,
        counters: Counters {
            dropped_batches: 1,
            dropped_bytes: 2,
            dropped_for_disk_full: 3,
            dead_lettered_batches: 4,
            lost_batches: 5,
            dead_letters_removed: 6,
            cursor_losses: 7,
        },
    };
    let slot = encode_slot(COUNTERS_MAGIC, 11, &cursor);
    assert_eq!(slot.len(), 512);
    assert_eq!(&slot[0..4], b"PGSN");
    assert_eq!(slot[4..8], FORMAT_VERSION.to_le_bytes());
    assert_eq!(slot[8..16], 11u64.to_le_bytes());
    assert_eq!(slot[16..24], 9u64.to_le_bytes());
    for (i, value) in (1..=7u64).enumerate() {
        assert_eq!(
            slot[24 + 8 * i..32 + 8 * i],
            value.to_le_bytes(),
            "counter {i}"
        );
    }
    assert_eq!(slot[80..84], crc32fast::hash(&slot[..80]).to_le_bytes());
    assert!(slot[84..].iter().all(|&b| b == 0));

    // The newer generation wins, in whichever slot it is; a damaged slot leaves the other.
    let older = Cursor {
        acked_through: 8,
        ..cursor
    };
    let mut file = encode_slot(COUNTERS_MAGIC, 12, &older).to_vec();
    file.extend_from_slice(&slot);
    let state = decode_state(COUNTERS_MAGIC, &file).unwrap();
    assert_eq!((state.generation, state.cursor), (12, older));
    file[3] ^= 1;
    let state = decode_state(COUNTERS_MAGIC, &file).unwrap();
    assert_eq!((state.generation, state.cursor), (11, cursor));
    assert!(state.damaged_slot.is_some());
    // The cursor's magic is not the counters file's.
    assert!(decode_state(CURSOR_MAGIC, &file).is_err());
}
