"""Helpers of the emulator tests: the OpenAPI response validator and a thin HTTP client."""

from __future__ import annotations

import json
import os
import re
import time
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from pytest_neon.local.emulator import Emulator

SPEC_URI = "https://spec.invalid/neon-openapi.json"
JSON = dict[str, Any]


#: Neon's openapi.yaml, vendored with its licence next to the emulator's tests
SPEC = Path(__file__).resolve().parents[1] / "emulator" / "neon_api" / "openapi.yaml"


def spec_path() -> Path:
    """Where Neon's openapi.yaml is: ``$NEON_OPENAPI_SPEC``, else the vendored copy."""
    given = os.environ.get("NEON_OPENAPI_SPEC")
    return Path(given) if given else SPEC


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


class OpenApiSpec:
    """Neon's OpenAPI document, able to validate a response of any path/method/status."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as fh:
            # The C safe loader when libyaml is there (the file is large): still a safe load.
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            raw = yaml.load(fh, Loader=loader)  # noqa: S506
        # Through JSON: status keys become strings and example dates plain strings.
        self.doc: JSON = json.loads(json.dumps(raw, default=str))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT4)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        templates: list[str] = list(self.doc["paths"])
        # Literal segments win over parameters (/branches/count before /branches/{id}).
        templates.sort(key=lambda t: t.count("{"))
        self._templates = [
            (t, re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", t) + "$")) for t in templates
        ]
        self._validators: dict[str, Any] = {}

    def template_for(self, path: str) -> str | None:
        """The spec's path template matching a concrete ``path`` (under the base URL)."""
        for template, regex in self._templates:
            if regex.match(path):
                return template
        return None

    def _resolve(self, pointer: str) -> Any:
        node: Any = self.doc
        for part in pointer.strip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def schema_pointer(self, template: str, method: str, status: int) -> str | None:
        """JSON pointer of the response schema, or ``None`` when the response has no body."""
        responses = self.doc["paths"][template][method.lower()]["responses"]
        key = str(status) if str(status) in responses else "default"
        assert key in responses, f"{method} {template} documents no {status} response"
        pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{key}"
        response = responses[key]
        if "$ref" in response:
            pointer = response["$ref"].removeprefix("#")
            response = self._resolve(pointer)
        if "application/json" not in response.get("content", {}):
            return None
        return f"{pointer}/content/application~1json/schema"

    def errors(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Schema violations of a response body (empty when it conforms)."""
        template = self.template_for(path)
        pointer: str | None
        if template is None or method.lower() not in self.doc["paths"][template]:
            # Not an API call at all (unknown path or method): a GeneralError is expected.
            if status < 400:
                return [f"{method} {path} is not in openapi.yaml but answered {status}"]
            pointer = "/components/schemas/GeneralError"
        else:
            pointer = self.schema_pointer(template, method, status)
        if pointer is None:
            return [] if body is None else [f"{status} should have no body, got {body!r}"]
        validator = self._validators.get(pointer)
        if validator is None:
            validator = OAS30Validator(
                {"$ref": f"{SPEC_URI}#{pointer}"},
                registry=self.registry,
                format_checker=oas30_format_checker,
            )
            self._validators[pointer] = validator
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(body)
        ]


@cache
def load_spec() -> OpenApiSpec | None:
    """The spec, loaded once per process; ``None`` when the file is absent."""
    path = spec_path()
    return OpenApiSpec(path) if path.is_file() else None


class NeonHttp:
    """Plain ``requests`` against an emulator; every response is checked against the spec."""

    def __init__(
        self, emulator: Emulator, spec: OpenApiSpec | None, api_key: str | None = None
    ) -> None:
        self.emulator = emulator
        self.spec = spec
        self.base = emulator.api_host
        self.project_id = emulator.project_id
        self.session = requests.Session()
        key = api_key if api_key is not None else emulator.api_key
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.checked: list[tuple[str, str, int]] = []

    def close(self) -> None:
        """Close the HTTP session."""
        self.session.close()

    def __enter__(self) -> NeonHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def project_path(self, suffix: str = "") -> str:
        """``/projects/<project id><suffix>``."""
        return f"/projects/{self.project_id}{suffix}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send a request under the base URL and validate the answer against the spec."""
        kwargs.setdefault("timeout", 60)
        response = self.session.request(method, self.base + path, **kwargs)
        self.check(method, path.split("?")[0], response)
        return response

    def check(self, method: str, path: str, response: requests.Response) -> None:
        """Assert that ``response`` conforms to the spec (when the spec is available)."""
        assert response.headers.get("X-Neon-Request-Id"), "no X-Neon-Request-Id header"
        body = response.json() if response.content else None
        if response.status_code >= 400:
            assert isinstance(body, dict), response.text
            assert isinstance(body.get("code"), str), body
            assert isinstance(body.get("message"), str), body
            assert body.get("request_id") == response.headers["X-Neon-Request-Id"]
        if self.spec is None:
            return
        problems = self.spec.errors(method, path, response.status_code, body)
        assert not problems, f"{method} {path} -> {response.status_code}: {problems}\n{body}"
        template = self.spec.template_for(path) or path
        self.checked.append((method, template, response.status_code))

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        """GET under the base URL."""
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        """POST under the base URL."""
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        """DELETE under the base URL."""
        return self.request("DELETE", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        """PATCH under the base URL."""
        return self.request("PATCH", path, **kwargs)

    # --- shortcuts -----------------------------------------------------------------------------

    def create_branch(self, expect: int = 201, **branch: Any) -> JSON:
        """Create a branch with a read-write endpoint; assert the status; return the body."""
        body = {"branch": branch, "endpoints": [{"type": "read_write"}]}
        response = self.post(self.project_path("/branches"), json=body)
        assert response.status_code == expect, response.text
        result: JSON = response.json()
        return result

    def restore(self, branch_id: str, source_id: str, expect: int = 200) -> JSON:
        """Restore ``branch_id`` to ``source_id``; assert the status; return the body."""
        response = self.post(
            self.project_path(f"/branches/{branch_id}/restore"),
            json={"source_branch_id": source_id},
        )
        assert response.status_code == expect, response.text
        result: JSON = response.json()
        return result

    def delete_branch(self, branch_id: str, expect: int = 200) -> requests.Response:
        """Delete a branch; assert the status."""
        response = self.delete(self.project_path(f"/branches/{branch_id}"))
        assert response.status_code == expect, response.text
        return response

    def uri(self, branch_id: str, database: str = "neondb", role: str = "neondb_owner") -> str:
        """The connection URI of a branch's database."""
        response = self.get(
            self.project_path("/connection_uri"),
            params={"branch_id": branch_id, "database_name": database, "role_name": role},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["uri"])

    def branch_names(self) -> set[str]:
        """Names of all branches (one big page)."""
        response = self.get(self.project_path("/branches"))
        assert response.status_code == 200, response.text
        return {b["name"] for b in response.json()["branches"]}


def sql(uri: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on a fresh connection (closed afterwards); return its rows."""
    with psycopg.connect(uri, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def database_exists(postgres_url: str, name: str) -> bool:
    """Whether the real database ``name`` exists on the server."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def real_name(uri: str) -> str:
    """The real database name in a connection URI."""
    return uri.rsplit("/", 1)[1].split("?")[0]


def wait_for_spares(emulator: Emulator, branch_id: str, count: int = 1) -> list[str]:
    """The real names of ``branch_id``'s spares once at least ``count`` are ready and none
    is being cloned (fails the test after 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = emulator.control_plane.spares.ready(branch_id)
        if ready is not None and len(ready) >= count:
            return ready
        time.sleep(0.02)
    pytest.fail(f"{count} spare(s) were not prepared")
