"""``python -m hlc_oracle.skew``: the ``hlc-oracle skew`` command (:mod:`hlc_oracle.cli.skew`)."""

import sys

from hlc_oracle.cli.skew import main

if __name__ == "__main__":
    sys.exit(main())
