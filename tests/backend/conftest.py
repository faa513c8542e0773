"""Backend tests re-use the emulated-project fixture of the plugin tests."""

from tests.plugin.plugin_helpers import neon

__all__ = ["neon"]
