//! The `CommitStream` messages of `hlc_oracle.v1` (proto/oracle.proto), encoded and decoded here so
//! that a stream message of hundreds of transactions crosses into Python as one call instead of
//! hundreds of protobuf objects. Only the protobuf wire format's subset these messages use:
//! varints, length-delimited fields, and skipping unknown fields of any wire type.
//!
//! ```text
//! Timestamp            1 physical (varint) 2 logical (varint) 3 node (varint)
//! Transaction          1 txn_id (varint) 2 start_ts (Timestamp) 3 read_set (bytes, repeated)
//!                      4 write_set (bytes, repeated)
//! CommitStreamRequest  1 transactions (Transaction, repeated)
//! Conflict             1 kind (string) 2 key (optional bytes) 3 commit_ts (Timestamp)
//!                      4 winner_txn_id (varint)
//! Aborted              1 reason (string) 2 conflict (Conflict)
//! CommitError          1 code (varint) 2 message (string)
//! CommitResult         1 txn_id (varint) 2 commit_ts (Timestamp) | 3 aborted | 4 error
//! CommitStreamResponse 1 results (CommitResult, repeated)
//! ```

use std::fmt;

use crate::commit::{AbortReason, Outcome};
use crate::conflict::{Conflict, ConflictKind, LostTo, Transaction};
use crate::timestamp::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(message: impl Into<String>) -> WireError {
    WireError(message.into())
}

/// A timestamp as it came over the wire, not yet range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireTimestamp {
    pub physical: u64,
    pub logical: u64,
    pub node: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireTransaction {
    pub txn_id: u64,
    pub start_ts: Option<WireTimestamp>,
    pub reads: Vec<Vec<u8>>,
    pub writes: Vec<Vec<u8>>,
}

/// One result of a `CommitStreamResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireResult {
    Decided(u64, Outcome),
    Error {
        txn_id: u64,
        code: u32,
        message: String,
    },
}

// ---- primitives --------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_uint(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_key(out, field, 0);
        put_varint(out, value);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Writes a length-delimited sub-message whose body `body` appends, in place: the body goes
/// straight into `out` behind a one-byte length, and moves right only when it is 128 bytes or
/// longer and its length needs more bytes (no buffer per message).
fn put_message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_key(out, field, 2);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = [0u8; 10];
    let mut width = 0;
    let mut value = len as u64;
    while value >= 0x80 {
        prefix[width] = (value as u8) | 0x80;
        value >>= 7;
        width += 1;
    }
    prefix[width] = value as u8;
    width += 1;
    let end = out.len();
    out.resize(end + width - 1, 0);
    out.copy_within(at + 1..end, at + width);
    out[at..at + width].copy_from_slice(&prefix[..width]);
}

fn put_timestamp(out: &mut Vec<u8>, field: u32, ts: Timestamp) {
    put_message(out, field, |m| {
        put_uint(m, 1, ts.physical());
        put_uint(m, 2, ts.logical());
        put_uint(m, 3, u64::from(ts.node()));
    });
}

struct Reader<'a> {
    bytes: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    /// A varint; most (field keys, lengths, small values) are one byte, read without the loop.
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        if let Some((&byte, rest)) = self.bytes.split_first() {
            if byte < 0x80 {
                self.bytes = rest;
                return Ok(u64::from(byte));
            }
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64, WireError> {
        let bytes = self.bytes;
        let mut value = 0u64;
        for (i, &byte) in bytes.iter().take(10).enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                self.bytes = &bytes[i + 1..];
                return Ok(value);
            }
        }
        Err(error(if bytes.len() < 10 {
            "truncated varint"
        } else {
            "varint longer than 10 bytes"
        }))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(error("truncated length-delimited field"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// The next `(field, value)`, or `None` at the end.
    #[inline]
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, WireError> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(error("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Other
            }
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| error("length does not fit in memory"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Other
            }
            other => return Err(error(format!("unsupported wire type {other}"))),
        };
        Ok(Some((field, value)))
    }
}

fn expect_varint(value: Value<'_>, name: &str) -> Result<u64, WireError> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => Err(error(format!("{name} must be a varint"))),
    }
}

/// A `uint32` field: protobuf parsers truncate a wider varint, which would serve a number the
/// client never sent; it is refused instead.
fn expect_uint32(value: Value<'_>, name: &str) -> Result<u64, WireError> {
    let wide = expect_varint(value, name)?;
    if wide > u64::from(u32::MAX) {
        return Err(error(format!("{name} is {wide}, out of range for uint32")));
    }
    Ok(wide)
}

fn expect_bytes<'a>(value: Value<'a>, name: &str) -> Result<&'a [u8], WireError> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => Err(error(format!("{name} must be length-delimited"))),
    }
}

fn decode_timestamp(bytes: &[u8]) -> Result<WireTimestamp, WireError> {
    let mut reader = Reader { bytes };
    let mut ts = WireTimestamp::default();
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => ts.physical = expect_varint(value, "Timestamp.physical")?,
            2 => ts.logical = expect_uint32(value, "Timestamp.logical")?,
            3 => ts.node = expect_uint32(value, "Timestamp.node")?,
            _ => {}
        }
    }
    Ok(ts)
}

// ---- requests -----------------------------------------------------------------------------------

fn decode_transaction(bytes: &[u8]) -> Result<WireTransaction, WireError> {
    let mut reader = Reader { bytes };
    let mut txn = WireTransaction::default();
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => txn.txn_id = expect_varint(value, "Transaction.txn_id")?,
            2 => txn.start_ts = Some(decode_timestamp(expect_bytes(value, "start_ts")?)?),
            3 => txn.reads.push(expect_bytes(value, "read_set")?.to_vec()),
            4 => txn.writes.push(expect_bytes(value, "write_set")?.to_vec()),
            _ => {}
        }
    }
    Ok(txn)
}

/// The transactions of a `CommitStreamRequest`.
pub fn decode_request(bytes: &[u8]) -> Result<Vec<WireTransaction>, WireError> {
    let mut reader = Reader { bytes };
    let mut txns = Vec::new();
    while let Some((field, value)) = reader.field()? {
        if field == 1 {
            txns.push(decode_transaction(expect_bytes(value, "transactions")?)?);
        }
    }
    Ok(txns)
}

/// The one-byte tags of `Transaction`'s fields as every encoder writes them: `txn_id` (1) as a
/// varint, `start_ts` (2), `read_set` (3) and `write_set` (4) length-delimited; and of
/// `Timestamp`'s three varints.
const TXN_ID_TAG: u8 = 1 << 3;
const START_TS_TAG: u8 = 2 << 3 | 2;
const READ_SET_TAG: u8 = 3 << 3 | 2;
const WRITE_SET_TAG: u8 = 4 << 3 | 2;
const PHYSICAL_TAG: u8 = 1 << 3;
const LOGICAL_TAG: u8 = 2 << 3;
const NODE_TAG: u8 = 3 << 3;
/// `CommitStreamRequest.transactions` (1), length-delimited.
const TRANSACTIONS_TAG: u8 = 1 << 3 | 2;

/// A varint at the front of `bytes`, which moves past it. Straight-line when ten bytes are left
/// (the longest varint), the general reader's loop otherwise; the same values and errors.
#[inline(always)]
fn take_varint(bytes: &mut &[u8]) -> Result<u64, WireError> {
    let b = *bytes;
    if let Some(&first) = b.first() {
        if first < 0x80 {
            *bytes = &b[1..];
            return Ok(u64::from(first));
        }
    }
    if let Some(head) = b.first_chunk::<10>() {
        let mut value = 0u64;
        for (i, &byte) in head.iter().enumerate() {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                *bytes = &b[i + 1..];
                return Ok(value);
            }
        }
        return Err(error("varint longer than 10 bytes"));
    }
    let mut reader = Reader { bytes: b };
    let value = reader.long_varint()?;
    *bytes = reader.bytes;
    Ok(value)
}

/// A length-delimited field's body at the front of `bytes` (after its tag), which moves past it.
#[inline(always)]
fn take_delimited<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], WireError> {
    let len = take_varint(bytes)?;
    let b = *bytes;
    match usize::try_from(len) {
        Ok(len) if len <= b.len() => {
            let (body, rest) = b.split_at(len);
            *bytes = rest;
            Ok(body)
        }
        Ok(_) => Err(error("truncated length-delimited field")),
        Err(_) => Err(error("length does not fit in memory")),
    }
}

/// A `Timestamp`: its three fields read by their one-byte tags, anything else (unknown fields,
/// a field with another wire type) by the general reader, with its errors.
#[inline(always)]
fn decode_timestamp_fast(mut bytes: &[u8]) -> Result<WireTimestamp, WireError> {
    let mut ts = WireTimestamp::default();
    while let Some((&tag, rest)) = bytes.split_first() {
        match tag {
            PHYSICAL_TAG => {
                bytes = rest;
                ts.physical = take_varint(&mut bytes)?;
            }
            LOGICAL_TAG | NODE_TAG => {
                bytes = rest;
                let value = take_varint(&mut bytes)?;
                let name = if tag == LOGICAL_TAG {
                    "Timestamp.logical"
                } else {
                    "Timestamp.node"
                };
                let value = expect_uint32(Value::Varint(value), name)?;
                if tag == LOGICAL_TAG {
                    ts.logical = value;
                } else {
                    ts.node = value;
                }
            }
            _ => {
                let mut reader = Reader { bytes };
                if let Some((field, value)) = reader.field()? {
                    match field {
                        1 => ts.physical = expect_varint(value, "Timestamp.physical")?,
                        2 => ts.logical = expect_uint32(value, "Timestamp.logical")?,
                        3 => ts.node = expect_uint32(value, "Timestamp.node")?,
                        _ => {}
                    }
                }
                bytes = reader.bytes;
            }
        }
    }
    Ok(ts)
}

/// Decodes one transaction of a `CommitStreamRequest` straight into the engine's form, into
/// `txn`: its key sets are cleared and refilled, so a `txn` reused from an earlier message
/// allocates nothing once its buffers are large enough. `Ok(Some((txn_id, message)))` names why
/// the transaction cannot be one (then `txn` holds nothing useful).
///
/// One loop over the fields, dispatched on the one-byte tags every encoder writes (the keys,
/// the id, the start timestamp); any other field (unknown, or a known one with another wire type
/// or a longer tag) goes through the general reader, with the same values and errors.
pub fn decode_engine_transaction(
    bytes: &[u8],
    txn: &mut Transaction,
) -> Result<Option<(u64, String)>, WireError> {
    let mut rest = bytes;
    let mut txn_id = 0;
    let mut start = None;
    txn.reads.clear();
    txn.writes.clear();
    txn.clock = None;
    while let Some((&tag, after_tag)) = rest.split_first() {
        match tag {
            READ_SET_TAG => {
                rest = after_tag;
                txn.reads.push(take_delimited(&mut rest)?);
            }
            WRITE_SET_TAG => {
                rest = after_tag;
                txn.writes.push(take_delimited(&mut rest)?);
            }
            TXN_ID_TAG => {
                rest = after_tag;
                txn_id = take_varint(&mut rest)?;
            }
            START_TS_TAG => {
                rest = after_tag;
                start = Some(decode_timestamp_fast(take_delimited(&mut rest)?)?);
            }
            _ => {
                let mut reader = Reader { bytes: rest };
                if let Some((field, value)) = reader.field()? {
                    match field {
                        1 => txn_id = expect_varint(value, "Transaction.txn_id")?,
                        2 => start = Some(decode_timestamp(expect_bytes(value, "start_ts")?)?),
                        3 => txn.reads.push(expect_bytes(value, "read_set")?),
                        4 => txn.writes.push(expect_bytes(value, "write_set")?),
                        _ => {}
                    }
                }
                rest = reader.bytes;
            }
        }
    }
    txn.id = txn_id;
    match start {
        None => Ok(Some((
            txn_id,
            format!("transaction {txn_id}: start_ts is required"),
        ))),
        Some(ts) => match Timestamp::new(ts.physical, ts.logical, ts.node) {
            Ok(start_ts) => {
                txn.start_ts = start_ts;
                Ok(None)
            }
            Err(err) => Ok(Some((
                txn_id,
                format!("transaction {txn_id}: malformed start_ts: {err}"),
            ))),
        },
    }
}

/// Calls `each` with the bytes of every transaction of a `CommitStreamRequest`, in order.
pub fn for_each_request_transaction(
    bytes: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut rest = bytes;
    while let Some((&tag, after_tag)) = rest.split_first() {
        if tag == TRANSACTIONS_TAG {
            rest = after_tag;
            each(take_delimited(&mut rest)?)?;
            continue;
        }
        let mut reader = Reader { bytes: rest };
        if let Some((field, value)) = reader.field()? {
            if field == 1 {
                each(expect_bytes(value, "transactions")?)?;
            }
        }
        rest = reader.bytes;
    }
    Ok(())
}

/// The id and start timestamp (`None`: missing or malformed) of each transaction of a
/// `CommitStreamRequest`, its keys skipped: a cheap look before the message is decided.
pub fn request_ids_and_starts(bytes: &[u8]) -> Result<Vec<(u64, Option<Timestamp>)>, WireError> {
    let mut reader = Reader { bytes };
    let mut out = Vec::new();
    while let Some((field, value)) = reader.field()? {
        if field != 1 {
            continue;
        }
        let mut txn = Reader {
            bytes: expect_bytes(value, "transactions")?,
        };
        let (mut txn_id, mut start) = (0, None);
        while let Some((field, value)) = txn.field()? {
            match field {
                1 => txn_id = expect_varint(value, "Transaction.txn_id")?,
                2 => start = Some(decode_timestamp(expect_bytes(value, "start_ts")?)?),
                _ => {}
            }
        }
        let start = start.and_then(|ts| Timestamp::new(ts.physical, ts.logical, ts.node).ok());
        out.push((txn_id, start));
    }
    Ok(out)
}

/// How many transactions a `CommitStreamRequest` holds, checking only its outer framing (a
/// cheap look before the message is queued).
pub fn count_request_transactions(bytes: &[u8]) -> Result<usize, WireError> {
    let mut reader = Reader { bytes };
    let mut count = 0;
    while let Some((field, value)) = reader.field()? {
        if field == 1 {
            expect_bytes(value, "transactions")?;
            count += 1;
        }
    }
    Ok(count)
}

/// Appends a committed `CommitResult` without building its sub-messages apart (the hot path: one
/// per committed transaction): laid out in a small array on the stack (at most 36 bytes: both
/// lengths fit in one byte) and appended in one copy.
pub fn encode_committed_result(out: &mut Vec<u8>, txn_id: u64, ts: Timestamp) {
    let mut result = ShortMessage::default();
    result.byte(1 << 3 | 2);
    let result_length_at = result.placeholder();
    result.uint(1, txn_id);
    result.byte(2 << 3 | 2);
    let ts_length_at = result.placeholder();
    result.uint(1, ts.physical());
    result.uint(2, ts.logical());
    result.uint(3, u64::from(ts.node()));
    result.fill_length(ts_length_at);
    result.fill_length(result_length_at);
    out.extend_from_slice(result.bytes());
}

/// A message of at most [`SHORT_MESSAGE_BYTES`] bytes built in place (see
/// [`encode_committed_result`]): whose length fields, filled once the body is in, take one byte.
struct ShortMessage {
    bytes: [u8; SHORT_MESSAGE_BYTES],
    len: usize,
}

/// Room for a committed result: 2 + 11 (id) + 2 + 11 + 6 + 4 (the timestamp's fields).
const SHORT_MESSAGE_BYTES: usize = 40;

impl Default for ShortMessage {
    fn default() -> Self {
        Self {
            bytes: [0; SHORT_MESSAGE_BYTES],
            len: 0,
        }
    }
}

impl ShortMessage {
    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.byte((value as u8) | 0x80);
            value >>= 7;
        }
        self.byte(value as u8);
    }

    /// A varint field (tag of one byte), left out when 0 as proto3 does.
    #[inline(always)]
    fn uint(&mut self, field: u8, value: u64) {
        if value != 0 {
            self.byte(field << 3);
            self.varint(value);
        }
    }

    /// Where a one-byte length goes, filled by [`Self::fill_length`] once its body is in.
    #[inline(always)]
    fn placeholder(&mut self) -> usize {
        self.byte(0);
        self.len - 1
    }

    /// The body after the placeholder at `at` is complete: its length (under 128) goes there.
    #[inline(always)]
    fn fill_length(&mut self, at: usize) {
        self.bytes[at] = (self.len - at - 1) as u8;
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Appends one `Transaction` as field `field` of the enclosing message.
pub fn encode_transaction<'k>(
    out: &mut Vec<u8>,
    txn_id: u64,
    start_ts: Timestamp,
    reads: impl Iterator<Item = &'k [u8]>,
    writes: impl Iterator<Item = &'k [u8]>,
) {
    put_message(out, 1, |m| {
        put_uint(m, 1, txn_id);
        put_timestamp(m, 2, start_ts);
        for key in reads {
            put_bytes(m, 3, key);
        }
        for key in writes {
            put_bytes(m, 4, key);
        }
    });
}

// ---- results ------------------------------------------------------------------------------------

/// Appends one `CommitResult` (field 1 of `CommitStreamResponse`).
pub fn encode_result(out: &mut Vec<u8>, result: &WireResult) {
    put_message(out, 1, |m| encode_result_fields(m, result));
}

/// Appends the fields of one `CommitResult`: the whole answer of a unary `Commit` or `Abort`.
pub fn encode_result_fields(m: &mut Vec<u8>, result: &WireResult) {
    match result {
        WireResult::Decided(txn_id, Outcome::Committed(ts)) => {
            put_uint(m, 1, *txn_id);
            put_timestamp(m, 2, *ts);
        }
        WireResult::Decided(txn_id, Outcome::Aborted(reason)) => {
            put_uint(m, 1, *txn_id);
            put_message(m, 3, |a| match reason {
                AbortReason::Requested => put_bytes(a, 1, b"requested"),
                AbortReason::Conflict(conflict) => {
                    put_bytes(a, 1, b"conflict");
                    put_message(a, 2, |c| {
                        put_bytes(c, 1, conflict.kind.name().as_bytes());
                        if let Some(key) = &conflict.key {
                            put_bytes(c, 2, key);
                        }
                        match conflict.lost_to {
                            LostTo::Commit(ts) | LostTo::LowWatermark(ts) => {
                                put_timestamp(c, 3, ts);
                            }
                            LostTo::BatchMember(id) => put_uint(c, 4, id),
                        }
                    });
                }
            });
        }
        WireResult::Error {
            txn_id,
            code,
            message,
        } => {
            put_uint(m, 1, *txn_id);
            put_message(m, 4, |e| {
                put_uint(e, 1, u64::from(*code));
                put_bytes(e, 2, message.as_bytes());
            });
        }
    }
}

fn checked_timestamp(ts: WireTimestamp) -> Result<Timestamp, WireError> {
    Timestamp::new(ts.physical, ts.logical, ts.node).map_err(|err| error(err.to_string()))
}

fn decode_conflict(txn_id: u64, bytes: &[u8]) -> Result<Conflict, WireError> {
    let mut reader = Reader { bytes };
    let mut kind = None;
    let mut key = None;
    let mut commit_ts = None;
    let mut winner = 0;
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => {
                kind = Some(
                    ConflictKind::from_name(expect_bytes(value, "Conflict.kind")?)
                        .ok_or_else(|| error("unknown Conflict.kind"))?,
                );
            }
            2 => key = Some(expect_bytes(value, "Conflict.key")?.to_vec()),
            3 => commit_ts = Some(decode_timestamp(expect_bytes(value, "commit_ts")?)?),
            4 => winner = expect_varint(value, "Conflict.winner_txn_id")?,
            _ => {}
        }
    }
    let kind = kind.ok_or_else(|| error("Conflict.kind is missing"))?;
    let lost_to = match (commit_ts, winner, kind) {
        (Some(ts), _, ConflictKind::TooOld) => LostTo::LowWatermark(checked_timestamp(ts)?),
        (Some(ts), _, _) => LostTo::Commit(checked_timestamp(ts)?),
        (None, id, _) if id != 0 => LostTo::BatchMember(id),
        _ => return Err(error("Conflict has neither commit_ts nor winner_txn_id")),
    };
    Ok(Conflict {
        txn_id,
        kind,
        key,
        lost_to,
    })
}

/// One `CommitResult` (the body of field 1 of a `CommitStreamResponse`).
pub fn decode_result(bytes: &[u8]) -> Result<WireResult, WireError> {
    let mut reader = Reader { bytes };
    let mut txn_id = 0;
    let mut committed = None;
    let mut aborted: Option<&[u8]> = None;
    let mut failure: Option<&[u8]> = None;
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => txn_id = expect_varint(value, "CommitResult.txn_id")?,
            2 => committed = Some(decode_timestamp(expect_bytes(value, "commit_ts")?)?),
            3 => aborted = Some(expect_bytes(value, "aborted")?),
            4 => failure = Some(expect_bytes(value, "error")?),
            _ => {}
        }
    }
    if let Some(ts) = committed {
        return Ok(WireResult::Decided(
            txn_id,
            Outcome::Committed(checked_timestamp(ts)?),
        ));
    }
    if let Some(body) = aborted {
        let mut reader = Reader { bytes: body };
        let mut reason: &[u8] = b"";
        let mut conflict = None;
        while let Some((field, value)) = reader.field()? {
            match field {
                1 => reason = expect_bytes(value, "Aborted.reason")?,
                2 => conflict = Some(expect_bytes(value, "Aborted.conflict")?),
                _ => {}
            }
        }
        let reason = match (reason, conflict) {
            (b"requested", None) => AbortReason::Requested,
            (b"conflict", Some(body)) => AbortReason::Conflict(decode_conflict(txn_id, body)?),
            _ => {
                return Err(error(
                    "Aborted needs reason requested, or conflict with a Conflict",
                ))
            }
        };
        return Ok(WireResult::Decided(txn_id, Outcome::Aborted(reason)));
    }
    let body = failure.ok_or_else(|| error("CommitResult has no outcome"))?;
    let mut reader = Reader { bytes: body };
    let mut code = 0;
    let mut message = String::new();
    while let Some((field, value)) = reader.field()? {
        match field {
            1 => code = expect_varint(value, "CommitError.code")?,
            2 => {
                message = String::from_utf8_lossy(expect_bytes(value, "CommitError.message")?)
                    .into_owned();
            }
            _ => {}
        }
    }
    Ok(WireResult::Error {
        txn_id,
        code: u32::try_from(code).unwrap_or(u32::MAX),
        message,
    })
}

/// One result of a `CommitStreamResponse`, indexed (see [`index_response`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedResult {
    pub txn_id: u64,
    /// The commit timestamp of a committed transaction; `None`: aborted or refused, decoded on
    /// demand from `bytes[start..end]` with [`decode_result`].
    pub committed: Option<Timestamp>,
    pub refused: bool,
    pub start: usize,
    pub end: usize,
}

/// A `CommitResult` in the shape this crate encodes a commit (`txn_id`, then `commit_ts` with its
/// non-zero fields in order, nothing else), read without the general field loop: the common
/// answer, checked as [`decode_result`] would. `None` for any other shape or a value that
/// result would refuse: [`decode_result`] reads it then, and names the problem.
fn committed_fast(body: &[u8]) -> Option<(u64, Timestamp)> {
    let mut reader = Reader {
        bytes: body.strip_prefix(&[0x08])?,
    };
    let txn_id = reader.varint().ok()?;
    reader.bytes = reader.bytes.strip_prefix(&[0x12])?;
    let len = reader.varint().ok()?;
    if usize::try_from(len).ok()? != reader.bytes.len() {
        return None;
    }
    let mut ts = [0u64; 3];
    for (slot, tag) in ts.iter_mut().zip([0x08u8, 0x10, 0x18]) {
        if let Some(rest) = reader.bytes.strip_prefix(&[tag]) {
            reader.bytes = rest;
            *slot = reader.varint().ok()?;
        }
    }
    let [physical, logical, node] = ts;
    if !reader.bytes.is_empty() || logical > u64::from(u32::MAX) || node > u64::from(u32::MAX) {
        return None;
    }
    Some((txn_id, Timestamp::new(physical, logical, node).ok()?))
}

/// The results of a `CommitStreamResponse` as an index into its bytes: each committed one's id
/// and timestamp, each other's place (validated now, decoded again when asked for). One vector per
/// message, nothing per result.
pub fn index_response(bytes: &[u8]) -> Result<Vec<IndexedResult>, WireError> {
    let total = bytes.len();
    let mut reader = Reader { bytes };
    // About the size of a committed result each: one allocation in the usual case.
    let mut results = Vec::with_capacity(total / 24);
    while let Some((field, value)) = reader.field()? {
        if field != 1 {
            continue;
        }
        let body = expect_bytes(value, "results")?;
        let end = total - reader.bytes.len();
        let start = end - body.len();
        let (txn_id, committed, refused) = match committed_fast(body) {
            Some((txn_id, ts)) => (txn_id, Some(ts), false),
            None => match decode_result(body)? {
                WireResult::Decided(txn_id, Outcome::Committed(ts)) => (txn_id, Some(ts), false),
                WireResult::Decided(txn_id, Outcome::Aborted(_)) => (txn_id, None, false),
                WireResult::Error { txn_id, .. } => (txn_id, None, true),
            },
        };
        results.push(IndexedResult {
            txn_id,
            committed,
            refused,
            start,
            end,
        });
    }
    Ok(results)
}

/// The results of a `CommitStreamResponse`.
pub fn decode_response(bytes: &[u8]) -> Result<Vec<WireResult>, WireError> {
    let mut reader = Reader { bytes };
    let mut results = Vec::new();
    while let Some((field, value)) = reader.field()? {
        if field == 1 {
            results.push(decode_result(expect_bytes(value, "results")?)?);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(physical: u64, logical: u64, node: u64) -> Timestamp {
        Timestamp::new(physical, logical, node).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        let mut out = Vec::new();
        let reads: [&[u8]; 2] = [b"r1", b""];
        let writes: [&[u8]; 1] = [b"w"];
        encode_transaction(
            &mut out,
            7,
            ts(1_795_000_000_000_000, 5, 3),
            reads.into_iter(),
            writes.into_iter(),
        );
        encode_transaction(
            &mut out,
            u64::MAX,
            ts(0, 0, 0),
            [].into_iter(),
            writes.into_iter(),
        );
        let txns = decode_request(&out).unwrap();
        assert_eq!(txns.len(), 2);
        assert_eq!(txns[0].txn_id, 7);
        assert_eq!(
            txns[0].start_ts,
            Some(WireTimestamp {
                physical: 1_795_000_000_000_000,
                logical: 5,
                node: 3
            })
        );
        assert_eq!(txns[0].reads, vec![b"r1".to_vec(), vec![]]);
        assert_eq!(txns[1].txn_id, u64::MAX);
        assert_eq!(txns[1].start_ts, Some(WireTimestamp::default()));
    }

    #[test]
    fn long_messages_round_trip() {
        // Bodies of 127, 128 and 20,000 bytes: a length of one, two and three bytes, written
        // in place behind a one-byte guess.
        for size in [119, 120, 20_000] {
            let key = vec![b'k'; size];
            let mut out = b"before".to_vec();
            let writes: [&[u8]; 1] = [&key];
            encode_transaction(&mut out, 7, ts(5, 0, 0), [].into_iter(), writes.into_iter());
            encode_transaction(&mut out, 8, ts(6, 0, 0), writes.into_iter(), [].into_iter());
            assert_eq!(&out[..6], b"before");
            let txns = decode_request(&out[6..]).unwrap();
            assert_eq!(txns.len(), 2);
            assert_eq!((txns[0].txn_id, &txns[0].writes), (7, &vec![key.clone()]));
            assert_eq!((txns[1].txn_id, &txns[1].reads), (8, &vec![key.clone()]));
        }
    }

    #[test]
    fn results_round_trip() {
        let conflict = |lost_to, key: Option<&[u8]>, kind| Conflict {
            txn_id: 9,
            kind,
            key: key.map(<[u8]>::to_vec),
            lost_to,
        };
        let results = vec![
            WireResult::Decided(1, Outcome::Committed(ts(100, 2, 1))),
            WireResult::Decided(2, Outcome::Aborted(AbortReason::Requested)),
            WireResult::Decided(
                9,
                Outcome::Aborted(AbortReason::Conflict(conflict(
                    LostTo::Commit(ts(5, 0, 1)),
                    Some(b"k"),
                    ConflictKind::WriteWrite,
                ))),
            ),
            WireResult::Decided(
                9,
                Outcome::Aborted(AbortReason::Conflict(conflict(
                    LostTo::BatchMember(4),
                    Some(b""),
                    ConflictKind::ReadWrite,
                ))),
            ),
            WireResult::Decided(
                9,
                Outcome::Aborted(AbortReason::Conflict(conflict(
                    LostTo::LowWatermark(ts(3, 0, 0)),
                    None,
                    ConflictKind::TooOld,
                ))),
            ),
            WireResult::Error {
                txn_id: 0,
                code: 3,
                message: "bad".into(),
            },
        ];
        let mut out = Vec::new();
        for result in &results {
            encode_result(&mut out, result);
        }
        assert_eq!(decode_response(&out).unwrap(), results);
        let index = index_response(&out).unwrap();
        assert_eq!(index.len(), results.len());
        assert_eq!(index[0].committed, Some(ts(100, 2, 1)));
        assert!(index[5].refused && !index[1].refused && index[1].committed.is_none());
        for (entry, result) in index.iter().zip(&results) {
            assert_eq!(
                &decode_result(&out[entry.start..entry.end]).unwrap(),
                result
            );
        }
    }

    /// The index's fast read of a commit agrees with the general decoder on every shape: the
    /// canonical ones it reads, and the others it leaves to that decoder (other field order, an
    /// unknown field, a value out of range, a cut result).
    #[test]
    fn the_index_reads_commits_as_the_decoder_does() {
        let body = |fields: &[(u32, u64)], ts: &[(u32, u64)], extra: &[u8]| {
            let mut b = Vec::new();
            for &(field, value) in fields {
                put_key(&mut b, field, 0);
                put_varint(&mut b, value);
            }
            let mut t = Vec::new();
            for &(field, value) in ts {
                put_key(&mut t, field, 0);
                put_varint(&mut t, value);
            }
            put_bytes(&mut b, 2, &t);
            b.extend_from_slice(extra);
            b
        };
        let physical = 1_795_000_000_000_000;
        let bodies = [
            body(&[(1, 7)], &[(1, physical), (2, 3), (3, 2)], &[]),
            body(&[(1, u64::MAX)], &[(1, physical)], &[]),
            body(&[(1, 7)], &[], &[]),
            body(&[], &[(1, physical)], &[]),
            body(&[(1, 7)], &[(3, 2), (1, physical)], &[]),
            body(&[(1, 7)], &[(1, physical), (4, 9)], &[]),
            body(&[(1, 7)], &[(1, physical)], &[0x28, 0x01]),
            body(&[(1, 7)], &[(1, physical), (3, 70_000)], &[]),
            body(&[(1, 7)], &[(1, physical), (2, 1 << 40)], &[]),
            body(&[(1, 7)], &[(1, u64::MAX)], &[]),
        ];
        for body in &bodies {
            let mut message = Vec::new();
            put_bytes(&mut message, 1, body);
            let decoded = decode_result(body);
            let fast = committed_fast(body);
            match (&decoded, fast) {
                (Ok(WireResult::Decided(id, Outcome::Committed(at))), Some(read)) => {
                    assert_eq!(read, (*id, *at));
                }
                (_, None) => {}
                (other, Some(read)) => panic!("fast read {read:?}, decoder {other:?}"),
            }
            match decoded {
                Ok(result) => {
                    let index = index_response(&message).unwrap();
                    let committed = match result {
                        WireResult::Decided(id, Outcome::Committed(at)) => Some((id, at)),
                        _ => None,
                    };
                    assert_eq!(
                        index[0].committed.map(|at| (index[0].txn_id, at)),
                        committed
                    );
                }
                Err(err) => assert_eq!(index_response(&message).unwrap_err(), err),
            }
            for cut in 1..message.len() {
                assert!(index_response(&message[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(committed_fast(&bodies[0]).is_some() && committed_fast(&bodies[4]).is_none());
    }

    #[test]
    fn damaged_messages_are_errors_not_panics() {
        let mut out = Vec::new();
        let writes: [&[u8]; 1] = [b"key"];
        encode_transaction(
            &mut out,
            7,
            ts(10, 0, 0),
            [].into_iter(),
            writes.into_iter(),
        );
        for cut in 1..out.len() {
            assert!(decode_request(&out[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_request(&[0xff; 12]).is_err());
        assert!(decode_request(&[0x0b]).is_err()); // wire type 3
        assert!(decode_response(&[0x0a, 0x00]).is_err()); // a result without outcome
                                                          // Unknown fields are skipped.
        let mut with_unknown = vec![0x28, 0x01]; // field 5, varint 1
        with_unknown.extend_from_slice(&out);
        assert_eq!(decode_request(&with_unknown).unwrap().len(), 1);
    }

    #[test]
    fn engine_decoding_reads_keys_of_every_length_and_refuses_cut_ones() {
        let long: Vec<Vec<u8>> = [0, 1, 126, 127, 128, 129, 300]
            .iter()
            .map(|&n| vec![b'k'; n])
            .collect();
        let reads: Vec<&[u8]> = long.iter().map(Vec::as_slice).collect();
        let writes: Vec<&[u8]> = long.iter().rev().map(Vec::as_slice).collect();
        let mut out = Vec::new();
        encode_transaction(
            &mut out,
            9,
            ts(10, 1, 2),
            reads.iter().copied(),
            writes.iter().copied(),
        );
        let mut inner = None;
        for_each_request_transaction(&out, |bytes| {
            inner = Some(bytes.to_vec());
            Ok(())
        })
        .unwrap();
        let inner = inner.unwrap();
        let mut txn = Transaction::new(0, ts(0, 0, 0), [b"old"], [b"old"], None);
        assert_eq!(decode_engine_transaction(&inner, &mut txn).unwrap(), None);
        assert_eq!(txn.id, 9);
        assert_eq!(txn.start_ts, ts(10, 1, 2));
        assert_eq!(txn.reads, crate::conflict::KeySet::new(&reads));
        assert_eq!(txn.writes, crate::conflict::KeySet::new(&writes));
        // Cut anywhere: an error, or (cut between fields) fewer keys; never a panic.
        for cut in 0..inner.len() {
            if decode_engine_transaction(&inner[..cut], &mut txn).is_ok() {
                assert!(
                    txn.reads.len() + txn.writes.len() < 2 * long.len(),
                    "cut at {cut}"
                );
            }
        }
        // A one-byte length past the end is refused, as by the general field reader.
        assert!(decode_engine_transaction(&[READ_SET_TAG, 2, b'a'], &mut txn).is_err());
        assert!(decode_engine_transaction(&[WRITE_SET_TAG, 5, b'a'], &mut txn).is_err());
    }

    /// The engine's decoder against the general one (`decode_transaction`), on encodings no
    /// encoder of ours writes but the wire format allows: unknown fields of every wire type,
    /// fields out of order and repeated, long lengths, non-minimal tags and varints.
    #[test]
    fn engine_decoding_agrees_with_the_general_reader_on_unusual_encodings() {
        let key = |n: usize| vec![b'k'; n];
        let long = key(200);
        let bodies: Vec<Vec<u8>> = vec![
            // txn_id 300 (two bytes); start_ts { node 2, physical 10, unknown 5 = 1, logical 1 }
            // (fields out of order); a read of 200 bytes (two-byte length); a write.
            [
                &[
                    0x08, 0xac, 0x02, 0x12, 0x08, 0x18, 0x02, 0x08, 0x0a, 0x28, 0x01, 0x10, 0x01,
                ][..],
                &[0x1a, 0xc8, 0x01],
                &long,
                &[0x22, 0x01, b'w'],
            ]
            .concat(),
            // Unknown fields of wire types 0, 1, 2 and 5 between the keys; the write first.
            vec![
                0x22, 0x01, b'a', 0x28, 0x07, 0x31, 1, 2, 3, 4, 5, 6, 7, 8, 0x3a, 0x02, b'x', b'y',
                0x45, 1, 2, 3, 4, 0x1a, 0x00, 0x08, 0x05, 0x12, 0x02, 0x08, 0x01,
            ],
            // Non-minimal tags (field 3 as 0x9a 0x00, field 1 as 0x88 0x00) and a non-minimal
            // varint (txn_id 1 as 0x81 0x00); start_ts twice (the last wins).
            vec![
                0x88, 0x00, 0x81, 0x00, 0x9a, 0x00, 0x01, b'r', 0x12, 0x02, 0x08, 0x01, 0x12, 0x02,
                0x08, 0x02, 0xa2, 0x00, 0x00,
            ],
            // No start_ts; txn_id of ten bytes (u64::MAX).
            [&[0x08][..], &[0xff; 9], &[0x01, 0x22, 0x01, b'w']].concat(),
            // start_ts with a field of another wire type: refused by both.
            vec![0x08, 0x01, 0x12, 0x02, 0x0a, 0x00],
            // txn_id length-delimited: refused by both.
            vec![0x0a, 0x01, 0x00],
            // A varint of eleven bytes: refused by both.
            [&[0x08][..], &[0xff; 10], &[0x01]].concat(),
        ];
        for body in &bodies {
            let mut request = Vec::new();
            put_bytes(&mut request, 1, body);
            let general = decode_request(&request);
            let mut txn = Transaction::new(0, ts(0, 0, 0), [b"old"], [b"old"], None);
            let mut engine = Ok(None);
            let outer = for_each_request_transaction(&request, |bytes| {
                engine = decode_engine_transaction(bytes, &mut txn);
                Ok(())
            });
            assert_eq!(outer, Ok(()));
            match (general, engine) {
                (Ok(txns), Ok(malformed)) => {
                    let expected = &txns[0];
                    assert_eq!(txn.id, expected.txn_id, "{body:?}");
                    assert_eq!(txn.reads, crate::conflict::KeySet::new(&expected.reads));
                    assert_eq!(txn.writes, crate::conflict::KeySet::new(&expected.writes));
                    match expected.start_ts {
                        Some(start) => {
                            assert_eq!(malformed, None, "{body:?}");
                            assert_eq!(txn.start_ts, checked_timestamp(start).unwrap());
                        }
                        None => assert!(malformed.is_some(), "{body:?}"),
                    }
                }
                (Err(general), Err(engine)) => assert_eq!(general, engine, "{body:?}"),
                (general, engine) => panic!("{body:?}: {general:?} against {engine:?}"),
            }
        }
    }

    #[test]
    fn a_timestamp_field_wider_than_uint32_is_refused_not_truncated() {
        // Timestamp { logical: 2**32 + 5 } inside Transaction { txn_id: 1, start_ts }.
        let logical = [0x10, 0x85, 0x80, 0x80, 0x80, 0x10];
        let mut txn = vec![0x08, 0x01, 0x12, logical.len() as u8];
        txn.extend_from_slice(&logical);
        let mut request = vec![0x0a, txn.len() as u8];
        request.extend_from_slice(&txn);
        let err = decode_request(&request).unwrap_err().to_string();
        assert!(
            err.contains("Timestamp.logical is 4294967301, out of range for uint32"),
            "{err}"
        );
    }
}
