//! Argument converters of the pyo3 glue: a Python value in, the Rust value out, or a `TypeError` /
//! `ValueError` naming the parameter, what it must be and what it got. Every wrapper takes its
//! arguments through these, so a message reads the same whichever class raised it. Nothing here
//! knows a class of the glue: a converter for a wrapper class is `cast_arg::<ThatClass>`.

use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyString, PyType};
use pyo3::PyTypeInfo;

use crate::conflict::KeySet;

/// The name of `value`'s type, for a message ("?" when even that fails).
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    class_name(&value.get_type())
}

fn class_name(class: &Bound<'_, PyType>) -> String {
    class.name().map_or_else(|_| "?".into(), |n| n.to_string())
}

/// `Err(TypeError)` unless `value` is an `int` (a `bool` is not one here).
fn int_check(value: &Bound<'_, PyAny>, field: &str) -> PyResult<()> {
    if !value.is_instance_of::<PyInt>() || value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, got {}",
            type_name(value)
        )));
    }
    Ok(())
}

/// An integer argument converted to `u64`, or a `ValueError` naming `field` when it is negative or
/// does not fit in 64 bits. Non-integers (and `bool`) are a `TypeError`.
pub(crate) fn u64_arg(value: &Bound<'_, PyAny>, field: &str) -> PyResult<u64> {
    int_check(value, field)?;
    value.extract::<u64>().map_err(|_| {
        PyValueError::new_err(format!(
            "{field} must be a non-negative integer below 2**64, got {value}"
        ))
    })
}

/// An integer argument converted to `i64`, or a `ValueError` naming `field` when it does not fit.
pub(crate) fn i64_arg(value: &Bound<'_, PyAny>, field: &str) -> PyResult<i64> {
    int_check(value, field)?;
    value.extract::<i64>().map_err(|_| {
        PyValueError::new_err(format!(
            "{field} must fit in a signed 64-bit integer, got {value}"
        ))
    })
}

/// An integer argument in `0..=max`, else a `ValueError` naming `field`, the range (with `unit`)
/// and the value; the same message whether or not the value fits in 64 bits (`u64_arg` would say
/// "below 2**64" for a physical time whose real bound is 2**52).
pub(crate) fn bounded_arg(
    value: &Bound<'_, PyAny>,
    field: &str,
    max: u64,
    unit: &str,
) -> PyResult<u64> {
    int_check(value, field)?;
    match value.extract::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(PyValueError::new_err(format!(
            "{field} must be in 0..={max}{unit}, got {value}"
        ))),
    }
}

/// An optional count: `default` when absent or None, else an int of at least 1 (`ValueError`
/// naming `field` for 0 or one too large for this machine).
pub(crate) fn usize_arg(
    value: Option<&Bound<'_, PyAny>>,
    field: &str,
    default: usize,
) -> PyResult<usize> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(default),
        Some(value) => {
            let n = u64_arg(value, field)?;
            if n == 0 {
                return Err(PyValueError::new_err(format!(
                    "{field} must be at least 1, got 0"
                )));
            }
            usize::try_from(n)
                .map_err(|_| PyValueError::new_err(format!("{field} is too large, got {n}")))
        }
    }
}

/// `value` as the Python class `T`, or a `TypeError` naming the parameter and the type received
/// (`remote must be a Timestamp, got NoneType`). Methods take `&Bound<PyAny>` and call this instead
/// of declaring a typed parameter, whose pyo3 error names neither. The success path is the same
/// type check pyo3 does for a typed parameter; only a failure pays for the message.
#[inline]
pub(crate) fn cast_arg<'a, 'py, T: PyTypeInfo>(
    value: &'a Bound<'py, PyAny>,
    field: &str,
) -> PyResult<&'a Bound<'py, T>> {
    match value.cast::<T>() {
        Ok(cast) => Ok(cast),
        Err(_) => Err(wrong_type::<T>(value, field, "")),
    }
}

/// `cast_arg` for a parameter that may also be None (or absent): `Ok(None)` then, and the
/// `TypeError` says "a T or None".
#[inline]
pub(crate) fn optional_cast_arg<'a, 'py, T: PyTypeInfo>(
    value: Option<&'a Bound<'py, PyAny>>,
    field: &str,
) -> PyResult<Option<&'a Bound<'py, T>>> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(None),
        Some(value) => match value.cast::<T>() {
            Ok(cast) => Ok(Some(cast)),
            Err(_) => Err(wrong_type::<T>(value, field, " or None")),
        },
    }
}

#[cold]
#[inline(never)]
pub(crate) fn wrong_type<T: PyTypeInfo>(
    value: &Bound<'_, PyAny>,
    field: &str,
    also: &str,
) -> PyErr {
    let expected = class_name(&T::type_object(value.py()));
    let article = if expected.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    };
    PyTypeError::new_err(format!(
        "{field} must be {article} {expected}{also}, got {}",
        type_name(value)
    ))
}

/// A `bytes` argument, borrowed; `what` names it in the `TypeError` ("timestamp bytes").
pub(crate) fn bytes_arg<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyBytes>> {
    value.cast::<PyBytes>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be bytes, got {}", type_name(value)))
    })
}

/// A `str` argument, borrowed; `what` names it in the `TypeError` ("timestamp text").
pub(crate) fn str_arg<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    what: &str,
) -> PyResult<&'a Bound<'py, PyString>> {
    value
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be str, got {}", type_name(value))))
}

/// A filesystem path: a `str` or an `os.PathLike`.
pub(crate) fn path_arg(value: &Bound<'_, PyAny>, field: &str) -> PyResult<PathBuf> {
    value.extract::<PathBuf>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{field} must be a str or os.PathLike, got {}",
            type_name(value)
        ))
    })
}

/// Reads an iterable of `bytes` / `str` keys (str as UTF-8) into a key set; None or absent is
/// the empty set.
pub(crate) fn key_set_arg(value: Option<&Bound<'_, PyAny>>, field: &str) -> PyResult<KeySet> {
    let mut keys = KeySet::default();
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(keys);
    };
    // A lone key would otherwise be iterated as characters or small integers.
    if value.is_instance_of::<PyBytes>() || value.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an iterable of keys, not a single {} key",
            type_name(value)
        )));
    }
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{field} must be an iterable of bytes or str keys, got {}",
            type_name(value)
        ))
    })?;
    for (index, item) in items.enumerate() {
        let item = item?;
        if let Ok(bytes) = item.cast::<PyBytes>() {
            keys.push(bytes.as_bytes());
        } else if let Ok(text) = item.cast::<PyString>() {
            let text = text.to_str().map_err(|_| {
                PyValueError::new_err(format!(
                    "{field}[{index}] is a str that cannot be encoded as UTF-8"
                ))
            })?;
            keys.push(text.as_bytes());
        } else {
            return Err(PyTypeError::new_err(format!(
                "{field}[{index}] must be bytes or str, got {}",
                type_name(&item)
            )));
        }
    }
    Ok(keys)
}

/// The items of an iterable argument, each cast to `T`; the `TypeError` names `field` when it is
/// not iterable ("an iterable of T") and `field[i]` for the first item that is not a `T`.
pub(crate) fn list_arg<'py, T: PyTypeInfo>(
    value: &Bound<'py, PyAny>,
    field: &str,
) -> PyResult<Vec<Bound<'py, T>>> {
    let items = value.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{field} must be an iterable of {}, got {}",
            class_name(&T::type_object(value.py())),
            type_name(value)
        ))
    })?;
    let mut out = Vec::with_capacity(value.len().unwrap_or(0));
    for (index, item) in items.enumerate() {
        match item?.cast_into::<T>() {
            Ok(item) => out.push(item),
            Err(err) => {
                let item = err.into_inner();
                return Err(wrong_type::<T>(&item, &format!("{field}[{index}]"), ""));
            }
        }
    }
    Ok(out)
}
