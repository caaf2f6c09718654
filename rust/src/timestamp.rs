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
//!   [`Timestamp::parse`] accepts exactly the text [`Display`](fmt::Display) writes, so each
//!   timestamp has one text form: no leap second (`:60`), no leading zeros in `logical` or `node`,
//!   no sign, no missing fraction.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};

pub const LOGICAL_BITS: u32 = 12;
pub const PHYSICAL_BITS: u32 = 64 - LOGICAL_BITS;
pub const MAX_LOGICAL: u64 = (1 << LOGICAL_BITS) - 1;
pub const MAX_PHYSICAL: u64 = (1 << PHYSICAL_BITS) - 1;
pub const MAX_NODE: u64 = u16::MAX as u64;
/// Length of [`Timestamp::to_bytes`].
pub const ENCODED_LEN: usize = 10;

const TEXT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// How much of an unparsable text an error message repeats: enough to recognise it, and a bounded
/// message however long the input.
pub const ECHOED_CHARS: usize = 64;

/// Why a timestamp could not be built or decoded. Each variant names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampError {
    PhysicalOutOfRange(u128),
    LogicalOutOfRange(u128),
    NodeOutOfRange(u128),
    WrongByteLength(usize),
    /// `text` is at most [`ECHOED_CHARS`] characters of the input; `length` is the input's
    /// length in bytes, so a message can say that it was cut.
    Unparsable {
        text: String,
        length: usize,
        reason: String,
    },
}

impl TimestampError {
    /// An [`Unparsable`](Self::Unparsable) error that echoes at most [`ECHOED_CHARS`] of `text`.
    pub fn unparsable(text: &str, reason: impl Into<String>) -> Self {
        let end = text
            .char_indices()
            .nth(ECHOED_CHARS)
            .map_or(text.len(), |(index, _)| index);
        Self::Unparsable {
            text: text[..end].to_owned(),
            length: text.len(),
            reason: reason.into(),
        }
    }
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
            Self::Unparsable {
                text,
                length,
                reason,
            } => {
                write!(f, "cannot parse timestamp {text:?}")?;
                if *length > text.len() {
                    write!(f, "... ({length} bytes)")?;
                }
                write!(
                    f,
                    ": {reason} (expected like 2026-11-21T13:47:00.123456Z/5@3)"
                )
            }
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

    /// Parses the text form. Only the canonical text (what `to_string` writes) is accepted, so
    /// `parse(s).to_string() == s` whenever `parse(s)` succeeds.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        let fail = |reason: &str| TimestampError::unparsable(text, reason);
        let (rest, node) = text
            .rsplit_once('@')
            .ok_or_else(|| fail("missing '@node'"))?;
        let (datetime, logical) = rest
            .rsplit_once('/')
            .ok_or_else(|| fail("missing '/logical'"))?;
        let node = parse_decimal(node, "node").map_err(|reason| fail(&reason))?;
        let logical = parse_decimal(logical, "logical").map_err(|reason| fail(&reason))?;
        let naive = NaiveDateTime::parse_from_str(datetime, TEXT_FORMAT)
            .ok()
            // chrono's parser tolerates a missing fraction; only the canonical form is lossless.
            .filter(|naive| naive.format(TEXT_FORMAT).to_string() == datetime)
            .ok_or_else(|| fail("date-time is not YYYY-MM-DDTHH:MM:SS.ffffffZ"))?;
        // chrono reads second 60 as a leap second, which lands on the same microsecond as second
        // 00 of the next minute: two texts for one timestamp. Timestamps never write it.
        if naive.nanosecond() >= 1_000_000_000 {
            return Err(fail(
                "second 60 (a leap second) is not a timestamp's text; seconds are 00..59",
            ));
        }
        let micros = naive.and_utc().timestamp_micros();
        let physical = u64::try_from(micros).map_err(|_| fail("date-time is before 1970"))?;
        Self::new(physical, logical, node).map_err(|err| fail(&err.to_string()))
    }
}

/// A `logical` or `node` field in canonical decimal: ASCII digits, no sign (`u64::from_str` would
/// take a leading `+`), no leading zero except for `0` itself. Errs with the reason, naming `field`.
fn parse_decimal(text: &str, field: &str) -> Result<u64, String> {
    if text.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{field} is not a decimal number"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!("{field} has a leading zero"));
    }
    text.parse()
        .map_err(|_| format!("{field} has {} digits, too many for its range", text.len()))
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

    /// Each row: non-canonical text that names one timestamp another text already names, and the
    /// words the error must use to say what is wrong.
    #[test]
    fn only_the_canonical_text_parses() {
        for (text, reason) in [
            ("2016-12-31T23:59:60.000000Z/0@0", "leap second"),
            ("2016-12-31T23:59:60.999999Z/0@0", "leap second"),
            (
                "2025-11-21T13:47:00.123456Z/04@3",
                "logical has a leading zero",
            ),
            (
                "2025-11-21T13:47:00.123456Z/00@3",
                "logical has a leading zero",
            ),
            (
                "2025-11-21T13:47:00.123456Z/4@002",
                "node has a leading zero",
            ),
            (
                "2025-11-21T13:47:00.123456Z/4@00",
                "node has a leading zero",
            ),
            ("2025-11-21T13:47:00.123456Z/4@", "node is empty"),
            ("2025-11-21T13:47:00.123456Z/@4", "logical is empty"),
            (
                "2025-11-21T13:47:00.123456Z/+4@3",
                "logical is not a decimal number",
            ),
            (
                "2025-11-21T13:47:00.123456Z/4@99999999999999999999999",
                "node has 23 digits",
            ),
            ("2025-11-21T13:47:00.1234560Z/4@3", "date-time"),
            ("2025-11-21T13:47:00.12345Z/4@3", "date-time"),
            ("2025-11-21T3:47:00.123456Z/4@3", "date-time"),
        ] {
            let message = Timestamp::parse(text).unwrap_err().to_string();
            assert!(message.contains(reason), "{text:?}: {message}");
        }
        // The canonical neighbours of the rows above do parse, and print back unchanged.
        for text in [
            "2016-12-31T23:59:59.999999Z/0@0",
            "2017-01-01T00:00:00.000000Z/0@0",
            "2025-11-21T13:47:00.123456Z/4@3",
            "2025-11-21T13:47:00.123456Z/0@0",
            "2025-11-21T13:47:00.123456Z/4095@65535",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn unparsable_text_is_echoed_only_in_part() {
        let long = "x".repeat(100_000);
        let message = Timestamp::parse(&long).unwrap_err().to_string();
        let echoed = format!("\"{}\"... (100000 bytes)", "x".repeat(ECHOED_CHARS));
        assert!(message.contains(&echoed), "{message}");
        assert!(message.len() < 300, "{} bytes", message.len());
        // Cut on a character boundary, counting characters, not bytes.
        let wide = "é".repeat(ECHOED_CHARS + 1);
        let message = Timestamp::parse(&wide).unwrap_err().to_string();
        assert!(message.contains(&format!("\"{}\"...", "é".repeat(ECHOED_CHARS))));
        // Short text is echoed whole, without an ellipsis.
        let message = Timestamp::parse("garbage").unwrap_err().to_string();
        assert!(message.starts_with("cannot parse timestamp \"garbage\": missing '@node'"));
    }

    #[test]
    fn wrong_byte_length_is_rejected() {
        assert_eq!(
            Timestamp::from_bytes(&[0; 9]),
            Err(TimestampError::WrongByteLength(9))
        );
    }
}
