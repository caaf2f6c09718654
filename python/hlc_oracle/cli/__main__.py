"""``python -m hlc_oracle.cli``: the ``hlc-oracle`` command."""

import sys

from hlc_oracle.cli import main

if __name__ == "__main__":
    sys.exit(main())
