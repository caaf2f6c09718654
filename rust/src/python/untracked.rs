//! Classes whose instances the cyclic collector never sees.
//!
//! pyo3 makes every `#[pyclass]` a GC type, so each instance is tracked: it counts toward the
//! young generation's survivors and every full collection traverses it while it lives (a client
//! holding a million transactions pays for a million traversals per full collection). An object
//! that holds no Python object cannot be part of a reference cycle, so the collector has nothing
//! to find through it: such a class allocates its instances untracked.

use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::PyClass;

/// The `tp_alloc` of an untracked class: the default allocation, then untracked at once. Every
/// construction path goes through it (Python calling the class, and pyo3 making an instance in
/// Rust: both allocate through the type's `tp_alloc`).
///
/// # Safety
/// Called by CPython as a `tp_alloc`, with a valid type and the thread attached.
unsafe extern "C" fn alloc_untracked(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: the caller's contract is `PyType_GenericAlloc`'s.
    let obj = unsafe { ffi::PyType_GenericAlloc(subtype, nitems) };
    if !obj.is_null() {
        // SAFETY: `obj` is a live object of a GC type, just tracked by `PyType_GenericAlloc`.
        unsafe { ffi::PyObject_GC_UnTrack(obj.cast()) };
    }
    obj
}

/// Adds the class `T` to `module` with its instances allocated untracked.
///
/// Only for a class that holds no Python object (no `Py<...>`, no `PyObject`, not even inside a
/// Rust container): the collector could not see a cycle through its instances. The class must
/// not be subclassable either (a Python subclass would inherit the allocator and could hold a
/// `__dict__`): that is checked here.
pub(crate) fn add_untracked_class<T: PyClass>(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let class = module.py().get_type::<T>();
    let type_ptr = class.as_type_ptr();
    // SAFETY: `type_ptr` is the live type object held by `class`.
    if unsafe { ffi::PyType_GetFlags(type_ptr) } & ffi::Py_TPFLAGS_BASETYPE != 0 {
        return Err(PyTypeError::new_err(format!(
            "{} is subclassable: its instances cannot be allocated untracked",
            class.name()?
        )));
    }
    // SAFETY: the type object is live and ours (a heap type pyo3 made for `T`); its instances
    // hold no Python object (the caller's contract), so they need no tracking, and no subclass
    // inherits the allocator (checked above). Instances made before this line stay tracked,
    // which is harmless.
    unsafe { (*type_ptr).tp_alloc = Some(alloc_untracked) };
    module.add_class::<T>()
}
