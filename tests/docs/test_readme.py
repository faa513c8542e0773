"""Every code block of the README and of docs/*.md is exercised here.

Blocks carry a directive in an HTML comment just above them:
``scenario=NAME file=PATH`` (a file of a runnable example), ``shell`` (commands, each
checked or run), ``emulator`` (the emulator command line, run for real), ``excerpt
of=PATH`` (lines that appear as they are in PATH, a file that runs in the test suite or
the examples), ``ci`` (a CI workflow: valid YAML whose pytest commands use real flags
and whose environment real variables). Plain ``text`` blocks are illustrations.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from pytest_neon.config import OPTIONS
from pytest_neon.local.emulator import Emulator
from tests.support.pytest_runs import clean_neon_env

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<directive>[^>]*?) -->\n)?[ ]*```(?P<lang>[a-z]*)\n(?P<body>.*?)```",
    re.S,
)


@dataclass
class Block:
    """One fenced code block of the README and its directive."""

    lang: str
    body: str
    directive: dict[str, str] = field(default_factory=dict)
    kind: str = ""
    source: str = "README.md"


def blocks() -> list[Block]:
    """The code blocks of the README, then of docs/*.md, in order."""
    found = []
    for doc in DOCS:
        for match in _BLOCK.finditer(doc.read_text()):
            words = (match.group("directive") or "").split()
            kind = words[0] if words and "=" not in words[0] else ""
            pairs = dict(w.split("=", 1) for w in words if "=" in w)
            source = str(doc.relative_to(ROOT))
            found.append(Block(match.group("lang"), match.group("body"), pairs, kind, source))
    return found


def scenarios() -> dict[str, dict[str, str]]:
    """Scenario name -> {file name: contents}."""
    out: dict[str, dict[str, str]] = {}
    for block in blocks():
        if "file" in block.directive:
            out.setdefault(block.directive["scenario"], {})[block.directive["file"]] = block.body
    return out


def test_every_code_block_is_checked() -> None:
    unchecked = [
        (b.source, b.body.splitlines()[0])
        for b in blocks()
        if not (b.directive or b.kind) and b.lang != "text"
    ]
    assert unchecked == []
    assert len(blocks()) >= 20


def test_ci_workflows_use_real_flags_and_variables() -> None:
    import yaml

    flags = {o.flag for o in OPTIONS}
    variables = {o.env for o in OPTIONS}
    workflows = [b for b in blocks() if b.kind == "ci"]
    assert workflows
    for block in workflows:
        jobs = yaml.safe_load(block.body)["jobs"]
        for job in jobs.values():
            assert set(job.get("env", {})) <= variables
            commands = [step["run"] for step in job["steps"] if "run" in step]
            tests = [c for c in commands if c.startswith("pytest ")]
            assert tests
            for command in tests:
                used = {w.split("=", 1)[0] for w in shlex.split(command) if w.startswith("--neon")}
                assert used <= flags, used - flags


def test_excerpts_are_taken_from_code_that_runs() -> None:
    excerpts = [b for b in blocks() if b.kind == "excerpt"]
    assert excerpts
    for block in excerpts:
        wanted = [line.strip() for line in block.body.strip().splitlines()]
        have = [line.strip() for line in (ROOT / block.directive["of"]).read_text().splitlines()]
        assert any(have[i : i + len(wanted)] == wanted for i in range(len(have))), (
            f"{block.source}: {wanted} is not in {block.directive['of']}"
        )


def test_settings_table_is_the_settings_contract() -> None:
    rows = re.findall(
        r"^\| [^|]+ \| `(--neon-[a-z-]+)` \| `([A-Z_]+)` \| (`[a-z_]+`|—) \|",
        README.read_text(),
        re.M,
    )
    documented = {(flag, env, ini.strip("`") if ini != "—" else None) for flag, env, ini in rows}
    assert documented == {(o.flag, o.env, o.ini) for o in OPTIONS}


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_scenario_runs_offline(
    name: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_neon_env(monkeypatch)
    for path, text in scenarios()[name].items():
        (pytester.path / path).write_text(text)
    commands = [
        line
        for b in blocks()
        if b.kind == "shell" and b.directive.get("scenario") == name
        for line in b.body.splitlines()
    ] or ["pytest"]
    for command in commands:
        args = shlex.split(command)
        assert args[0] == "pytest"
        result = pytester.runpytest_subprocess(*args[1:], "-p", "no:cacheprovider")
        assert result.ret == 0, result.stdout.str()
        assert "backend local (auto: no Neon credentials" in result.stdout.str()
        if name == "quickstart":
            _check_sample_output(result.stdout.lines)


def _check_sample_output(lines: list[str]) -> None:
    sample = next(b for b in blocks() if b.lang == "text" and "branches created" in b.body)
    for expected in sample.body.splitlines():
        if expected.strip() == "...":
            continue
        pattern = re.sub(r"\d+(\.\d+)?", "*", expected).replace("(...)", "*")
        pattern = pattern.replace("/usr/lib/postgresql/*/bin", "*").replace("[", "[[]")
        assert any(fnmatch.fnmatch(line, pattern) for line in lines), (expected, lines)


def _extras() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(data["project"]["optional-dependencies"])


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def test_shell_blocks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    clean_neon_env(monkeypatch)
    exports: dict[str, str] = {}
    known_env = {o.env for o in OPTIONS}
    ran_neon = False
    for block in blocks():
        if block.kind != "shell" or "scenario" in block.directive:
            continue
        for line in block.body.splitlines():
            args = shlex.split(line, comments=True)
            if args[:2] == ["pip", "install"]:
                for spec in args[2:]:
                    name, _, extra = spec.partition("[")
                    assert name == "pytest-neon"
                    assert not extra or extra.rstrip("]") in _extras()
            elif args[0] == "export":
                key, _, value = args[1].partition("=")
                assert key in known_env
                assert value
                exports[key] = value
            elif args[0] == "make":
                assert set(args[1:]) <= _make_targets()
            elif args[0] == "pytest":
                # The "on Neon" example, run against the emulator standing in for Neon.
                assert {"NEON_API_KEY", "NEON_PROJECT_ID"} <= set(exports)
                with Emulator(postgres_url, api_key="readme-key-123456") as emu:
                    monkeypatch.setenv("NEON_API_KEY", emu.api_key or "")
                    monkeypatch.setenv("NEON_PROJECT_ID", emu.project_id)
                    monkeypatch.setenv("NEON_API_HOST", emu.api_host)
                    for path, text in scenarios()["quickstart"].items():
                        (pytester.path / path).write_text(text)
                    result = pytester.runpytest_subprocess(*args[1:], "-p", "no:cacheprovider")
                    emu.stop(drop=True)
                result.assert_outcomes(passed=3)
                result.stdout.fnmatch_lines(["neon: backend neon (auto: *"])
                ran_neon = True
            else:
                pytest.fail(f"no check for README command {line!r}")
    assert ran_neon


def test_emulator_command(tmp_path: Path) -> None:
    block = next(b for b in blocks() if b.kind == "emulator")
    args = shlex.split(block.body.strip())
    assert args[0] == "pytest-neon-emulator"
    ready = tmp_path / "ready.json"
    args = [a if not a.endswith(".json") else str(ready) for a in args]
    exe = Path(sys.executable).parent / "pytest-neon-emulator"
    log = tmp_path / "emulator.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([str(exe), *args[1:]], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        assert set(info) == {"api_host", "project_id", "api_key", "default_branch_id"}
        response = requests.get(
            f"{info['api_host']}/projects/{info['project_id']}/branches",
            headers={"Authorization": f"Bearer {info['api_key']}"},
            timeout=30,
        )
        assert response.status_code == 200
        names = [b["name"] for b in response.json()["branches"]]
        assert names == ["main"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert "local-key" not in log.read_text()
