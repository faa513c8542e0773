"""``python -m pytest_neon.local.emulator``: run the emulator from the command line."""

from __future__ import annotations

import sys

from pytest_neon.local.emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
