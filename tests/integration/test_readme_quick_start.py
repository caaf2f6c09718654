"""The README's quick start for a node, run as a newcomer would: its Python block against a real
``hlc-oracle serve`` (the address swapped for the test's free port)."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.support.oracle_process import OracleProcess
from tests.support.repository import ROOT


def test_the_readme_node_quick_start_runs(start_oracle: Callable[..., OracleProcess]) -> None:
    oracle = start_oracle()
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### A node") : readme.index("### A local cluster")]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "127.0.0.1:50051" in block
    namespace: dict[str, object] = {}
    code = block.replace("127.0.0.1:50051", oracle.target)
    exec(compile(code, "README.md (a node)", "exec"), namespace)
    assert type(namespace["outcome"]).__name__ == "Committed"
