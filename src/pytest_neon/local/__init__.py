"""The offline backend: a throwaway PostgreSQL and a Neon API emulator over it."""

#: the superuser role of the clusters the plugin makes (the kept server's too)
SUPERUSER = "postgres"
#: a cluster's data directory, under its root
DATA_DIR = "data"
