"""The explorer's OpenAPI schema, fuzzed by schemathesis (bounded: a few examples per route).

Every response must be documented by the schema (status code, content type, body shape)
and none may be a 5xx, whatever the generated paths, queries and uploads. Operations are
driven one by one with Hypothesis (schemathesis's pytest plugin does not load under this
pytest). Left out: ``positive_data_acceptance``, which expects every schema-valid request
to succeed; a schema cannot say "bytes Pillow can decode" or "an image id this server has
seen", so those are rightly 404/415.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.faces.explorer.conftest import addressed_locally

EXAMPLES = 6
"""Examples per operation: about 70 requests over the explorer's routes."""


def test_every_route_answers_as_its_schema_says(app) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", addressed_locally(app))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def answers(case: schemathesis.Case) -> None:
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        answers()
