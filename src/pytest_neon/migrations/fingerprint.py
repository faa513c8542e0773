"""A fingerprint of a database's schema, to tell whether migrations changed anything."""

from __future__ import annotations

import hashlib

import psycopg

# Every user-visible object definition outside the system schemas, plus the on-disk size
# of each relation (so that rows added by a data migration are seen too).
_QUERY = """
SELECT n.nspname, c.relname, c.relkind,
       coalesce((SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod)
                                   || ':' || a.attnotnull, ',' ORDER BY a.attnum)
                 FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), ''),
       CASE WHEN c.relkind IN ('r', 'm', 't') THEN pg_relation_size(c.oid) ELSE 0 END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', 'f',
       md5(coalesce(p.prosrc, '')), 0
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT n.nspname, t.typname, 'T', '', 0
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT '', extname, 'x', extversion, 0 FROM pg_extension
ORDER BY 1, 2, 3
"""


def schema_fingerprint(dsn: str) -> str:
    """A hash of the schema (and relation sizes) of the database at ``dsn``."""
    digest = hashlib.sha256()
    with psycopg.connect(dsn, autocommit=True, connect_timeout=30) as conn:
        for row in conn.execute(_QUERY):
            digest.update(repr(row).encode())
    return digest.hexdigest()
