"""Writes the version-2 decision pieces and checkpoints in this directory: the scenario of
``../decision_pieces_v1/generate.py`` (every kind of decision, a batch split into pieces), run
once with the encoder of the release that wrote version 2 (at commit 9fbf3b8), then committed as
test data: a later release must read them as they are, for a rolling upgrade. Run again only to
compare: ``.venv/bin/python -m tests.data.decision_pieces_v2.generate OUT_DIR``."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.data.decision_pieces_v1.generate import main

if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
