//! The requests of the commit engine from Python: a `Transaction` (commit it) or an `int` (abort
//! that id), alone or in parts (a list of requests, or the bytes of one `CommitStreamRequest`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt};

use crate::commit::batch::PartData;
use crate::commit::Request;
use crate::python::args::{type_name, u64_arg};
use crate::python::conflict::PyTransaction;

pub(crate) enum Item {
    Commit(Py<PyTransaction>),
    Abort(u64),
}

impl Item {
    pub(crate) fn request(&self) -> Request<'_> {
        match self {
            Self::Commit(txn) => Request::Commit(&txn.get().0),
            Self::Abort(id) => Request::Abort(*id),
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
            items.push(Item::Abort(u64_arg(&item, &format!("requests[{index}]"))?));
        } else {
            return Err(PyTypeError::new_err(format!(
                "requests[{index}] must be a Transaction or an int transaction id, got {}",
                type_name(&item)
            )));
        }
    }
    Ok(items)
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
