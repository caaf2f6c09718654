"""``setting()``: a configuration field that documents itself.

Every section of :class:`~hlc_oracle.config.OracleConfig` (those defined beside what they configure
too: :class:`~hlc_oracle.commit_options.CommitOptions`, the skew guard's and the peers check's)
declares its fields with :func:`setting`, so ``hlc-oracle serve --help``, the ``--set`` flag and
the generated settings page (:mod:`hlc_oracle.config_reference`) read one set of metadata:
:func:`setting_doc` and :func:`setting_flag`.
"""

from __future__ import annotations

from dataclasses import Field, field
from typing import Any


def setting(default: Any, doc: str, flag: str | None = None) -> Any:
    """A dataclass field with its documentation and, optionally, its own command-line flag."""
    return field(default=default, metadata={"doc": doc, "flag": flag})


def setting_doc(declared: Field[Any]) -> str:
    """The documentation a :func:`setting` was declared with."""
    return str(declared.metadata["doc"])


def setting_flag(declared: Field[Any]) -> str | None:
    """The command-line flag a :func:`setting` was declared with, if any."""
    flag = declared.metadata.get("flag")
    return None if flag is None else str(flag)
