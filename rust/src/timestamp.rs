//! The HLC timestamp value type and its lossless encodings.
//!
//! A timestamp is `(physical, logical, node)`:
//! - `physical`: microseconds since the Unix epoch, `0..=MAX_PHYSICAL` (52 bits, past the year 2112);
//! - `logical`: counter within one physical microsecond, `0..=MAX_LOGICAL` (12 bits);
//! - `node`: id of the clock that made it, `0..=65535`.
//!
//! The total order is `(physical, logical, node)`. `(physical, logical)` packs into one `u64`
//! (`physical << 12 | logical`) whose unsigned order is the timestamp order; the clock works on this
//! packed form, so "one more logical tick" is `+1` and a logical overflow carries into physical.
//!
//! Encodings (all lossless):
//! - integer: the packed `u64` (the node is not part of it);
//! - bytes: 10 bytes, the packed `u64` big-endian then the node big-endian, so byte order is
//!   timestamp order (usable as a database key);
//! - text: `2026-11-21T13:47:00.123456Z/5@3` — UTC date-time with microseconds, `/logical`, `@node`.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};

pub const LOGICAL_BITS: u32 = 12;
pub const PHYSICAL_BITS: u32 = 64 - LOGICAL_BITS;
pub const MAX_LOGICAL: u64 = (1 << LOGICAL_BITS) - 1;
pub const MAX_PHYSICAL: u64 = (1 << PHYSICAL_BITS) - 1;
pub const MAX_NODE: u64 = u16::MAX as u64;
/// Length of [`Timestamp::to_bytes`].
pub const ENCODED_LEN: usize = 10;

const TEXT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Why a timestamp could not be built or decoded. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampError {
    PhysicalOutOfRange(u128),
    LogicalOutOfRange(u128),
    NodeOutOfRange(u128),
    WrongByteLength(usize),
    Unparsable { text: String, reason: String },
}

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PhysicalOutOfRange(v) => write!(
                f,
                "physical must be in 0..={MAX_PHYSICAL} (microseconds since the Unix epoch), got {v}"
            ),
            Self::LogicalOutOfRange(v) => {
                write!(f, "logical must be in 0..={MAX_LOGICAL}, got {v}")
            }
            Self::NodeOutOfRange(v) => write!(f, "node must be in 0..={MAX_NODE}, got {v}"),
            Self::WrongByteLength(n) => write!(
                f,
                "timestamp bytes must be exactly {ENCODED_LEN} bytes long, got {n}"
            ),
            Self::Unparsable { text, reason } => write!(
                f,
                "cannot parse timestamp {text:?}: {reason} \
                 (expected like 2026-11-21T13:47:00.123456Z/5@3)"
            ),
        }
    }
}

impl std::error::Error for TimestampError {}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Timestamp {
    // Field order matters: the derived `Ord` compares `packed` first, then `node`.
    packed: u64,
    node: u16,
}

impl Timestamp {
    pub fn new(physical: u64, logical: u64, node: u64) -> Result<Self, TimestampError> {
        if physical > MAX_PHYSICAL {
            return Err(TimestampError::PhysicalOutOfRange(physical.into()));
        }
        if logical > MAX_LOGICAL {
            return Err(TimestampError::LogicalOutOfRange(logical.into()));
        }
        let node = u16::try_from(node).map_err(|_| TimestampError::NodeOutOfRange(node.into()))?;
        Ok(Self {
            packed: (physical << LOGICAL_BITS) | logical,
            node,
        })
    }

    /// Builds from the packed `(physical, logical)` integer; every `u64` is valid.
    pub const fn from_packed(packed: u64, node: u16) -> Self {
        Self { packed, node }
    }

    pub const fn packed(self) -> u64 {
        self.packed
    }

    pub const fn physical(self) -> u64 {
        self.packed >> LOGICAL_BITS
    }

    pub const fn logical(self) -> u64 {
        self.packed & MAX_LOGICAL
    }

    pub const fn node(self) -> u16 {
        self.node
    }

    pub fn to_bytes(self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&self.packed.to_be_bytes());
        out[8..].copy_from_slice(&self.node.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TimestampError> {
        let array: &[u8; ENCODED_LEN] = bytes
            .try_into()
            .map_err(|_| TimestampError::WrongByteLength(bytes.len()))?;
        let mut packed = [0u8; 8];
        packed.copy_from_slice(&array[..8]);
        Ok(Self {
            packed: u64::from_be_bytes(packed),
            node: u16::from_be_bytes([array[8], array[9]]),
        })
    }

    /// The physical part as a UTC date-time. Always representable: 2^52 µs is in the year 2112.
    pub fn datetime(self) -> DateTime<Utc> {
        let micros = i64::try_from(self.physical()).unwrap_or(i64::MAX);
        DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let fail = |reason: &str| TimestampError::Unparsable {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, node) = text
            .rsplit_once('@')
            .ok_or_else(|| fail("missing '@node'"))?;
        let (datetime, logical) = rest
            .rsplit_once('/')
            .ok_or_else(|| fail("missing '/logical'"))?;
        let node = parse_decimal(node).ok_or_else(|| fail("node is not a decimal number"))?;
        let logical =
            parse_decimal(logical).ok_or_else(|| fail("logical is not a decimal number"))?;
        let naive = NaiveDateTime::parse_from_str(datetime, TEXT_FORMAT)
            .ok()
            // chrono's parser tolerates a missing fraction; only the canonical form is lossless.
            .filter(|naive| naive.format(TEXT_FORMAT).to_string() == datetime)
            .ok_or_else(|| fail("date-time is not YYYY-MM-DDTHH:MM:SS.ffffffZ"))?;
        let micros = naive.and_utc().timestamp_micros();
        let physical = u64::try_from(micros).map_err(|_| fail("date-time is before 1970"))?;
        Self::new(physical, logical, node).map_err(|err| fail(&err.to_string()))
    }
}

/// Plain ASCII digits only: `u64::from_str` would also accept a leading `+`, which is not lossless.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.datetime().format(TEXT_FORMAT),
            self.logical(),
            self.node
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_physical_then_logical_then_node() {
        let cases = [
            ((1, 0, 9), (2, 0, 0)),
            ((1, 1, 0), (1, 2, 0)),
            ((1, 1, 1), (1, 1, 2)),
            ((5, MAX_LOGICAL, 0), (6, 0, 0)),
        ];
        for ((p1, l1, n1), (p2, l2, n2)) in cases {
            let a = Timestamp::new(p1, l1, n1).unwrap();
            let b = Timestamp::new(p2, l2, n2).unwrap();
            assert!(a < b, "{a:?} < {b:?}");
            assert!(a.to_bytes() < b.to_bytes());
        }
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let physical = Timestamp::new(MAX_PHYSICAL + 1, 0, 0).unwrap_err();
        assert!(physical.to_string().starts_with("physical"));
        let logical = Timestamp::new(0, MAX_LOGICAL + 1, 0).unwrap_err();
        assert!(logical.to_string().starts_with("logical"));
        let node = Timestamp::new(0, 0, MAX_NODE + 1).unwrap_err();
        assert!(node.to_string().starts_with("node"));
    }

    #[test]
    fn round_trips() {
        for ts in [
            Timestamp::new(0, 0, 0).unwrap(),
            Timestamp::new(1_763_732_820_123_456, 5, 3).unwrap(),
            Timestamp::new(MAX_PHYSICAL, MAX_LOGICAL, MAX_NODE).unwrap(),
        ] {
            assert_eq!(Timestamp::from_bytes(&ts.to_bytes()).unwrap(), ts);
            assert_eq!(Timestamp::parse(&ts.to_string()).unwrap(), ts);
            assert_eq!(Timestamp::from_packed(ts.packed(), ts.node()), ts);
        }
    }

    #[test]
    fn text_form_is_readable() {
        let ts = Timestamp::new(1_763_732_820_123_456, 5, 3).unwrap();
        assert_eq!(ts.to_string(), "2025-11-21T13:47:00.123456Z/5@3");
    }

    #[test]
    fn bad_text_is_rejected() {
        for text in [
            "",
            "2025-11-21T13:47:00.123456Z/5",
            "2025-11-21T13:47:00.123456Z/+5@3",
            "2025-11-21T13:47:00Z/5@3",
            "2025-11-21 13:47:00.123456Z/5@3",
            "2025-11-21T13:47:00.123456Z/5@70000",
            "2025-11-21T13:47:00.123456Z/4096@1",
            "1969-12-31T23:59:59.999999Z/0@0",
        ] {
            assert!(Timestamp::parse(text).is_err(), "{text:?} should not parse");
        }
    }

    #[test]
    fn wrong_byte_length_is_rejected() {
        assert_eq!(
            Timestamp::from_bytes(&[0; 9]),
            Err(TimestampError::WrongByteLength(9))
        );
    }
}
