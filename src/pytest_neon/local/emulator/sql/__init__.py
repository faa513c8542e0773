"""What the emulator does on the real PostgreSQL server: connections, real databases (clone,
swap, drop), cluster roles, spare copies, and the metadata tables that keep the project."""
