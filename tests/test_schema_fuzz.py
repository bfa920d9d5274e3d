"""Schemathesis over ``/pool/schema`` against the live demo site, as a device, a master and an
admin: no answer is a server error, and every answer is one the schema describes (its status,
content type, headers and body).

The demo site is served by uvicorn in a subprocess (``tests.browser_site``). Each operation
gets a bounded, derandomized run of valid and of invalid requests, so the whole test takes
a minute or two. The stream is left out (it never ends; the live tests cover it), and a
long-poll's ``wait`` is shortened to keep within that bound.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.browser_site import Site, serve

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Requests per operation and principal: valid ones, then invalid ones.
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
NEVER_ENDS = {"/pool/stream"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    with serve(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def schema(site):
    return schemathesis.openapi.from_url(f"{site.url}/pool/schema?format=json", timeout=30)


def token_of(site: Site, who: str) -> str:
    if who == "device":
        return site.device_tokens["pi-1"]
    return site.user_token({"master": "master", "admin": "boss"}[who])


def short_wait(case) -> None:
    """A long-poll would hold the request up to LONG_POLL_MAX: ask for a moment instead."""
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 <= wait <= 60:
        case.query["wait"] = min(wait, 0.2)


@pytest.mark.parametrize("who", ["device", "master", "admin"])
def test_the_schema_holds_for_every_answer(site, schema, who):
    headers = {"Authorization": f"Bearer {token_of(site, who)}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in NEVER_ENDS:
            continue
        for mode, examples in EXAMPLES.items():

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
            )
            def call(case) -> None:
                short_wait(case)
                case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

            try:
                call()
            except Exception as error:  # every operation is tried; all failures reported
                failures.append(f"{who}, {mode.value} {operation.label}:\n{error}")
    assert not failures, "\n\n".join(failures)
