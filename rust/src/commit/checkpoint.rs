//! The checkpoint's payload: the newest decision timestamp the deleted segments covered. After
//! a restart the detector's low watermark starts there (see the module documentation).

use crate::timestamp::Timestamp;

const CHECKPOINT_VERSION: u8 = 1;

pub(super) fn encode(newest_commit: Option<Timestamp>) -> Vec<u8> {
    let mut out = vec![CHECKPOINT_VERSION];
    match newest_commit {
        Some(ts) => {
            out.push(1);
            out.extend_from_slice(&ts.packed().to_le_bytes());
            out.extend_from_slice(&ts.node().to_le_bytes());
        }
        None => out.push(0),
    }
    out
}

pub(super) fn decode(data: &[u8]) -> Option<Timestamp> {
    match data {
        [CHECKPOINT_VERSION, 1, rest @ ..] if rest.len() == 10 => {
            let mut packed = [0u8; 8];
            packed.copy_from_slice(&rest[..8]);
            Some(Timestamp::from_packed(
                u64::from_le_bytes(packed),
                u16::from_le_bytes([rest[8], rest[9]]),
            ))
        }
        _ => None,
    }
}
