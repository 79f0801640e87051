"""A bounded fuzz of every app on the session's platform (issues 16 and 19): no generated or
malformed request, valid or not, gets an answer >= 500 or waits past the actor-call deadline
(the generator's, for SyncCreate) and a margin; every error is in the `{"error": {...}}`
shape; every malformed request is refused with a clean 4xx; no refused request writes the
tenant's rows; and the gRPC service answers malformed calls with their status. `kiki bench
fuzz` runs the same longer; a failure here prints each request as curl.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks.fuzz import fuzz_tenant_key, run_fuzz
from kiki.config import SERVICES
from tests.integration.conftest import RunningPlatform

# A call to an actor that does not answer is given up at the actor-call deadline with a 503:
# no request may take longer than that plus this margin (proxy, database, the answer itself).
DEADLINE_MARGIN_S = 5.0
# Examples per operation and generation mode: the six apps take under 45 s here. The seed
# fixes the requests, so a failure repeats; `kiki bench fuzz` draws new ones each run.
EXAMPLES = 10
SEED = 16


@pytest.mark.parametrize("app", SERVICES)
def test_no_request_gets_a_5xx_or_hangs(platform: RunningPlatform, app: str) -> None:
    # Each app under a fresh tenant: the fuzz's data stays apart from the other tests'. Every
    # operation is fuzzed: a tenant key cannot open or reset the shared ad-platform breakers
    # (operators only), and its own admits and reports touch only its own. run_fuzz stops
    # the flow campaigns the fuzz started, so they do not keep bidding for the session.
    # Generating creatives has a deadline of its own (a GPU replica may have to start first).
    s = platform.settings
    deadline_s = (s.creative_timeout_s if app == "create" else s.actor_call_timeout_s) + (
        DEADLINE_MARGIN_S
    )
    _, key = asyncio.run(fuzz_tenant_key(platform.database_url))
    report = run_fuzz(
        platform.base_url, key, [app], examples=EXAMPLES, database_url=platform.database_url,
        grpc_target=platform.grpc_target, max_body_bytes=platform.settings.max_body_bytes,
        timeout_s=deadline_s, seed_value=SEED,
    )  # fmt: skip
    assert report.requests > 0 and report.malformed_sent > 0 and report.watched_tables > 30
    assert not any(report.failures.values()), report.table()
    assert report.slowest is not None and report.slowest.seconds < deadline_s, report.table()
    assert report.cleanup_error is None, report.cleanup_error
    if app == "value":  # the gRPC service, malformed calls and a good one afterwards
        assert len(report.grpc) > 10 and not report.grpc_failures, report.table()
