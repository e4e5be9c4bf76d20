"""Schemathesis against the live OpenAPI schema of a running gateway (``python -m gateway run``
with a private Mosquitto and InfluxDB), once without the operator token and once with it: no
500, and every answer conforms to its documented status codes, content type and schema.

Bounded and reproducible: a fixed number of examples per operation, derandomized. The endless
Server-Sent Events stream (/api/v1/events) is left out: tests/test_api.py covers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, base_config

# Schemathesis' own modules may warn on import or use (its pytest plugin above all); warnings
# are errors in this suite, so only theirs are let through, nothing of ours.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:hypothesis_jsonschema.*")]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SKIPPED = {"/api/v1/events"}
EXAMPLES = 25
# Valid requests, and invalid ones (wrong types, missing or extra parameters, bad bodies).
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]


def without_prefix_items(node: Any) -> Any:
    """The schema with JSON Schema 2020-12 ``prefixItems`` (pydantic's tuples, valid OpenAPI
    3.1) taken out: schemathesis 4.32 turns them into a draft-4 ``items`` list that it then
    calls an invalid schema. The tuples keep their array type and min/max length."""
    if isinstance(node, dict):
        return {k: without_prefix_items(v) for k, v in node.items() if k != "prefixItems"}
    if isinstance(node, list):
        return [without_prefix_items(v) for v in node]
    return node


def one(operation: Any, api: str, session: requests.Session, headers: dict[str, str],
        seen: dict[str, int]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: st.DataObject) -> None:
        mode = data.draw(st.sampled_from(MODES))
        case = data.draw(operation.as_strategy(generation_mode=mode))
        response = case.call_and_validate(base_url=api, session=session, headers=headers,
                                          checks=CHECKS, timeout=10)
        key = f"{operation.method.upper()} {operation.path} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1

    run()


def fuzz(api: str, headers: dict[str, str]) -> dict[str, int]:
    """Every operation of the live schema, ``EXAMPLES`` cases each; the status codes seen."""
    raw = requests.get(f"{api}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(without_prefix_items(raw))
    seen: dict[str, int] = {}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            if operation.path in SKIPPED:
                continue

            one(operation, api, session, headers, seen)
    return seen


def test_the_live_api_without_and_with_the_token(
    gateway_factory: Callable[..., GatewayProcess], tmp_path: Any,
    mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    # The fuzzer sends many wrong tokens from one address; the throttle is tests/test_auth.py's.
    cfg["api"]["token_attempts"] = 1000
    gw = gateway_factory(cfg)
    anonymous = fuzz(gw.api, {})
    operator = fuzz(gw.api, dict(OPERATOR))
    assert any(key.endswith(" 401") for key in anonymous), anonymous
    assert any(key.startswith("GET /api/v1/status ") and key.endswith(" 200")
               for key in operator), operator
    assert not any(key.endswith(" 500") for key in {**anonymous, **operator})
    assert "Traceback" not in gw.log(), gw.log()[-3000:]
