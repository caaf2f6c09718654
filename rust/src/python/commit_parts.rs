//! A batch of *parts* for `CommitEngine.process_parts` / `decide_parts`: each part is a list of
//! requests (`Transaction` or `int`, answered with objects) or one serialized
//! `CommitStreamRequest` (answered with the serialized response and its counts, no Python object
//! per transaction; see `commit::stream`). The scheduler hands one batch of many callers' parts
//! to the engine in one call.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::commit::stream::{StreamCounts, StreamPart, StreamPool, StreamShape};
use crate::commit::wire::WireError;
use crate::commit::{Outcome, Released, Request, SubmitError};
use crate::python::commit::{answer_object, items_arg, Item};

/// One part as given.
pub enum PartInput<'py> {
    Objects(Vec<Item>),
    Stream(Bound<'py, PyBytes>),
}

pub fn parts_arg<'py>(parts: &Bound<'py, PyAny>) -> PyResult<Vec<PartInput<'py>>> {
    let mut out = Vec::new();
    for part in parts.try_iter()? {
        let part = part?;
        match part.cast::<PyBytes>() {
            Ok(bytes) => out.push(PartInput::Stream(bytes.clone())),
            Err(_) => out.push(PartInput::Objects(items_arg(&part)?)),
        }
    }
    Ok(out)
}

/// One part, decoded (without the GIL).
pub enum DecodedPart<'i> {
    Objects(&'i [Item]),
    Stream(StreamPart),
    Malformed(WireError),
}

/// How to split a batch's answers back into its parts.
pub enum PartLayout {
    Objects(usize),
    Stream(StreamShape, usize),
    Malformed(String),
}

/// Input kept across the GIL release: object items and the bytes of each stream part.
pub enum PartData<'i> {
    Objects(&'i [Item]),
    Stream(&'i [u8]),
}

pub fn part_data<'i>(inputs: &'i [PartInput<'_>]) -> Vec<PartData<'i>> {
    inputs
        .iter()
        .map(|input| match input {
            PartInput::Objects(items) => PartData::Objects(items),
            PartInput::Stream(bytes) => PartData::Stream(bytes.as_bytes()),
        })
        .collect()
}

/// Decodes the parts, the messages into parts taken from `pool` (see [`recycle_parts`]).
pub fn decode_parts<'i>(data: &[PartData<'i>], pool: &mut StreamPool) -> Vec<DecodedPart<'i>> {
    data.iter()
        .map(|part| match part {
            PartData::Objects(items) => DecodedPart::Objects(items),
            PartData::Stream(bytes) => match pool.decode(bytes) {
                (stream, Ok(())) => DecodedPart::Stream(stream),
                (stream, Err(err)) => {
                    pool.recycle(stream);
                    DecodedPart::Malformed(err)
                }
            },
        })
        .collect()
}

/// Gives the decoded messages back to `pool` once the batch is decided, for the next batch to
/// refill (no allocation per transaction once warm).
pub fn recycle_parts(decoded: Vec<DecodedPart<'_>>, pool: &mut StreamPool) {
    for part in decoded {
        if let DecodedPart::Stream(stream) = part {
            pool.recycle(stream);
        }
    }
}

/// The batch's requests, in part order, and the layout to split the answers.
pub fn requests_of<'d>(decoded: &'d [DecodedPart<'_>]) -> (Vec<Request<'d>>, Vec<PartLayout>) {
    let mut requests = Vec::new();
    let mut layout = Vec::with_capacity(decoded.len());
    for part in decoded {
        match part {
            DecodedPart::Objects(items) => {
                requests.extend(items.iter().map(Item::request));
                layout.push(PartLayout::Objects(items.len()));
            }
            DecodedPart::Stream(stream) => {
                requests.extend(stream.transactions.iter().map(Request::Commit));
                layout.push(PartLayout::Stream(
                    stream.shape.clone(),
                    stream.transactions.len(),
                ));
            }
            DecodedPart::Malformed(err) => {
                layout.push(PartLayout::Malformed(format!(
                    "malformed CommitStreamRequest: {err}"
                )));
            }
        }
    }
    (requests, layout)
}

/// A part's answers before they meet Python: objects still to build, or the encoded response.
pub enum PartAnswers {
    Objects(usize, usize),
    Stream(Vec<u8>, StreamCounts),
    Malformed(String),
}

/// Splits `released`'s answers by `layout`, encoding the stream parts (no GIL needed).
pub fn split_answers(layout: &[PartLayout], released: &Released) -> Vec<PartAnswers> {
    let mut at = 0;
    layout
        .iter()
        .map(|part| match part {
            PartLayout::Objects(count) => {
                let answers = PartAnswers::Objects(at, *count);
                at += count;
                answers
            }
            PartLayout::Stream(shape, count) => {
                let end = (at + count).min(released.answers.len());
                let (bytes, counts) =
                    shape.encode_response(&released.txn_ids[at..end], &released.answers[at..end]);
                at = end;
                PartAnswers::Stream(bytes, counts)
            }
            PartLayout::Malformed(message) => PartAnswers::Malformed(message.clone()),
        })
        .collect()
}

/// The Python results of one batch: per part, a list of answers, a `(response bytes, committed,
/// aborted, refused, ceiling)` tuple, or the `ValueError` (not raised) of a malformed message.
pub fn part_results<'py>(
    py: Python<'py>,
    split: Vec<PartAnswers>,
    txn_ids: &[u64],
    answers: &[Result<Outcome, SubmitError>],
) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for part in split {
        match part {
            PartAnswers::Objects(at, count) => {
                let list = PyList::empty(py);
                for (txn_id, answer) in txn_ids[at..at + count].iter().zip(&answers[at..at + count])
                {
                    list.append(answer_object(py, *txn_id, answer)?)?;
                }
                out.append(list)?;
            }
            PartAnswers::Stream(bytes, counts) => out.append(PyTuple::new(
                py,
                [
                    PyBytes::new(py, &bytes).into_any(),
                    counts.committed.into_pyobject(py)?.into_any(),
                    counts.aborted.into_pyobject(py)?.into_any(),
                    counts.refused.into_pyobject(py)?.into_any(),
                    pyo3::types::PyBool::new(py, counts.ceiling)
                        .to_owned()
                        .into_any(),
                ],
            )?)?,
            PartAnswers::Malformed(message) => {
                out.append(PyValueError::new_err(message).into_value(py))?;
            }
        }
    }
    Ok(out)
}
