"""The offline backend: a throwaway PostgreSQL and a Neon API emulator over it."""

#: the superuser role of the clusters the plugin makes (the kept server's too)
SUPERUSER = "postgres"
#: a cluster's data directory, under its root
DATA_DIR = "data"
#: clean copies of a branch's source kept ahead after its reset (one more on a server that
#: syncs to disk, where a clone is slow): the emulator's spares, and what a run holds
SPARES_PER_BRANCH = 2
