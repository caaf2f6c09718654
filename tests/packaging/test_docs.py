"""The documentation site's sources and the README: the generated settings page is current, the
commit log's format is described in one place, every page is in the navigation, the docs name no
missing file or make verb, and the README is a front door of at most 300 lines whose in-process
quick start runs. (`mkdocs build --strict`
itself runs in `make test`: `make docs-check`.)"""

from __future__ import annotations

import re

import yaml
from hlc_oracle.config_reference import markdown

from tests.support.repository import ROOT

DOCS = ROOT / "docs"


def test_the_settings_page_is_generated_from_the_config_metadata() -> None:
    page = (DOCS / "settings.md").read_text()
    assert page == markdown(), (
        "docs/settings.md is not what config.py's metadata gives: run `make docs` "
        "(python -m hlc_oracle.config_reference docs/settings.md)"
    )


def test_the_commit_log_format_is_described_in_one_place() -> None:
    page = (DOCS / "commit-log.md").read_text()
    assert 'magic "HLCWAL\\r\\n"' in page and "kind 1 (committed)" in page
    for source in ("rust/src/log/mod.rs", "rust/src/commit/record.rs"):
        doc = "".join(line for line in (ROOT / source).open() if line.lstrip().startswith("//!"))
        assert "docs/commit-log.md" in doc, source
        assert "HLCWAL" not in doc and "lost-to tag" not in doc, source
    assert "HLCWAL" not in (ROOT / "README.md").read_text()


def every_nav_page(entries: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages.extend(every_nav_page(value) if isinstance(value, list) else [str(value)])
    return pages


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = set(every_nav_page(config["nav"]))
    on_disk = {
        str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md") if not path.name.startswith("_")
    }
    assert in_nav == on_disk


def test_the_docs_name_no_file_that_is_missing() -> None:
    # `path/to/file` in code spans that look like repository paths must exist.
    missing = set()
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for path in re.findall(r"`((?:python|rust|tests|bench|deploy|scripts|docs)/[\w./-]+)`",
                               page.read_text()):  # fmt: skip
            if "<" not in path and "*" not in path and not (ROOT / path).exists():
                missing.add(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, sorted(missing)


def test_every_make_verb_the_docs_name_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = set()
    for page in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        named.update(re.findall(r"(?:`|^)make ([a-z][\w-]*)", page.read_text(), re.M))
    assert named - targets == set(), sorted(named - targets)


def test_the_readme_is_the_front_door() -> None:
    """At most 300 lines: what and for whom, the two commands, install, a quick start in each
    mode, the layout, the links; the reference is in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for heading in ("## The two commands", "## Install", "## Quick start", "## Layout"):
        assert heading in readme, heading
    for mode in ("### In process", "### A node", "### A local cluster"):
        assert mode in readme, mode
    assert "make cluster" in readme


def test_the_readme_in_process_quick_start_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### In process") : readme.index("### A node")]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(block, "README.md (in process)", "exec"), {})
