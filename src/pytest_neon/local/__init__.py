"""The offline backend: a throwaway PostgreSQL and a Neon API emulator over it."""
