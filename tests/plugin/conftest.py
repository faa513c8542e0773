"""Plugin tests use the ``neon`` fixture from plugin_helpers."""

from tests.plugin.plugin_helpers import neon

__all__ = ["neon"]
