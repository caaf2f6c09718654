//! The requests of the commit engine from Python: a `Transaction` (commit it), an `int` (abort
//! that id) or an `(int, Timestamp)` pair (abort that id, which started then: see
//! `commit/history.rs`), alone or in parts (a list of requests, or the bytes of one
//! `CommitStreamRequest`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyTuple};

use crate::commit::batch::PartData;
use crate::commit::Request;
use crate::python::args::{type_name, u64_arg};
use crate::python::conflict::PyTransaction;
use crate::python::hlc::PyTimestamp;
use crate::timestamp::Timestamp;

pub(crate) enum Item {
    Commit(Py<PyTransaction>),
    Abort(u64, Option<Timestamp>),
}

impl Item {
    pub(crate) fn request(&self) -> Request<'_> {
        match self {
            Self::Commit(txn) => Request::Commit(&txn.get().0),
            Self::Abort(id, start) => Request::Abort(*id, *start),
        }
    }
}

pub(crate) fn items_arg(requests: &Bound<'_, PyAny>) -> PyResult<Vec<Item>> {
    let iterator = requests.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "requests must be an iterable of Transaction or int, got {}",
            type_name(requests)
        ))
    })?;
    let mut items = Vec::new();
    for (index, item) in iterator.enumerate() {
        let item = item?;
        if let Ok(txn) = item.cast::<PyTransaction>() {
            items.push(Item::Commit(txn.clone().unbind()));
        } else if item.is_instance_of::<PyInt>() && !item.is_instance_of::<PyBool>() {
            items.push(Item::Abort(
                u64_arg(&item, &format!("requests[{index}]"))?,
                None,
            ));
        } else if let Some(abort) = abort_with_start(&item, index)? {
            items.push(abort);
        } else {
            return Err(PyTypeError::new_err(format!(
                "requests[{index}] must be a Transaction, an int transaction id or a \
                 (transaction id, start Timestamp) pair, got {}",
                type_name(&item)
            )));
        }
    }
    Ok(items)
}

/// An `(int, Timestamp)` pair as an abort naming its start; None when `item` is no pair.
fn abort_with_start(item: &Bound<'_, PyAny>, index: usize) -> PyResult<Option<Item>> {
    let Ok(pair) = item.cast::<PyTuple>() else {
        return Ok(None);
    };
    if pair.len() != 2 {
        return Ok(None);
    }
    let (id, start) = (pair.get_item(0)?, pair.get_item(1)?);
    let Ok(start) = start.cast::<PyTimestamp>() else {
        return Ok(None);
    };
    if !id.is_instance_of::<PyInt>() || id.is_instance_of::<PyBool>() {
        return Ok(None);
    }
    let txn_id = u64_arg(&id, &format!("requests[{index}][0]"))?;
    Ok(Some(Item::Abort(txn_id, Some(start.get().0))))
}

pub(crate) fn item_requests(items: &[Item]) -> Vec<Request<'_>> {
    items.iter().map(Item::request).collect()
}

/// One part as given.
pub(crate) enum PartInput<'py> {
    Items(Vec<Item>),
    Stream(Bound<'py, PyBytes>),
}

pub(crate) fn parts_arg<'py>(parts: &Bound<'py, PyAny>) -> PyResult<Vec<PartInput<'py>>> {
    let mut out = Vec::new();
    for part in parts.try_iter()? {
        let part = part?;
        match part.cast::<PyBytes>() {
            Ok(bytes) => out.push(PartInput::Stream(bytes.clone())),
            Err(_) => out.push(PartInput::Items(items_arg(&part)?)),
        }
    }
    Ok(out)
}

/// The parts' data, borrowed for the batch: requests of the items, the bytes of each message.
pub(crate) fn part_data<'i>(inputs: &'i [PartInput<'_>]) -> Vec<PartData<'i>> {
    inputs
        .iter()
        .map(|input| match input {
            PartInput::Items(items) => PartData::Requests(item_requests(items)),
            PartInput::Stream(bytes) => PartData::Stream(bytes.as_bytes()),
        })
        .collect()
}
