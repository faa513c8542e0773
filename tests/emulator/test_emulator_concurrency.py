"""Eight clients creating, writing, restoring and deleting branches at the same time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pytest_neon.local.emulator import Emulator
from tests.support.emulator_http import NeonHttp, database_exists, load_spec, real_name, sql

WORKERS = 8
ROUNDS = 3


def test_concurrent_create_restore_delete(emulator: Emulator, postgres_url: str) -> None:
    main = emulator.default_branch_id

    def worker(n: int) -> list[str]:
        reals = []
        with NeonHttp(emulator, load_spec()) as api:
            for r in range(ROUNDS):
                branch = api.create_branch(name=f"gw{n}-{r}")["branch"]["id"]
                uri = api.uri(branch)
                reals.append(real_name(uri))
                sql(uri, f"CREATE TABLE w{n} (x int); INSERT INTO w{n} VALUES ({r})")
                api.restore(branch, main)
                assert api.uri(branch) == uri
                assert sql(uri, f"SELECT to_regclass('w{n}') IS NULL") == [(True,)]
                sql(uri, f"CREATE TABLE again{n} (x int)")
                api.restore(branch, main)
                api.delete_branch(branch)
        return reals

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(worker, range(WORKERS)))

    with NeonHttp(emulator, None) as api:
        assert api.branch_names() == {"main"}
        operations = api.get(api.project_path("/operations"), params={"limit": 1000})
        assert len(operations.json()["operations"]) == WORKERS * ROUNDS * (2 + 3 + 3 + 2)
    reals = [name for names in results for name in names]
    assert len(set(reals)) == WORKERS * ROUNDS
    assert not any(database_exists(postgres_url, name) for name in reals)
