"""Helpers shared by the test suite: inner pytest runs against an emulated project, the
emulator's HTTP client checked against Neon's OpenAPI description, fault injection, and
running the example projects."""
