"""Neon's control-plane semantics over real databases, one module per resource.

One :class:`~pytest_neon.local.emulator.plane.control_plane.ControlPlane` serves one
project. In-memory state (guarded by one lock) is the working copy; every change is written
through to the metadata tables. Slow database work (``CREATE DATABASE ... TEMPLATE``,
``DROP DATABASE``) runs outside the lock while the branches involved are marked busy, so
concurrent calls on other branches proceed.
"""
