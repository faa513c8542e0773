"""pytest11 entry point of pytest-neon."""
