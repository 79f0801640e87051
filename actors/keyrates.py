"""The cluster's one API-key rate limit: a named actor holds one token bucket per key, so a
key gets `KIKI_API_RATE_PER_S` across the whole cluster however many replicas serve it.

Replicas send the keys of the requests that arrived while their previous call was in flight
in one call (`deployments/_serve/keyrates.py`), so the actor sees one call per replica per
round trip, not one per request. A restart starts every bucket full again: at most one burst
more than the limit, once.
"""

from __future__ import annotations

import ray

from actors.resilience import command
from kiki.clock import WallClock
from kiki.errors import InvalidInput
from kiki.shield.ratelimit import RateLimiter

KEY_RATES_NAME = "kiki-key-rates"
MAX_BATCH = 10_000


class KeyRatesShell:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.limiter = RateLimiter(rate_per_s, burst, WallClock())

    @command("key rates")
    def check_many(self, key_hashes: list[str]) -> list[float]:
        """For each request (by its key's hash), 0.0 when admitted (and counted), else the
        seconds to wait."""
        if (
            not isinstance(key_hashes, list)
            or len(key_hashes) > MAX_BATCH
            or not all(isinstance(k, str) for k in key_hashes)
        ):
            raise InvalidInput(f"send a list of at most {MAX_BATCH} key hashes")
        return [self.limiter.check(k) for k in key_hashes]


KeyRatesActor = ray.remote(max_restarts=-1, max_task_retries=-1)(KeyRatesShell)


def key_rates(rate_per_s: float, burst: int, namespace: str = "kiki") -> ray.actor.ActorHandle:
    """The cluster's key-rate actor, created by the first replica that needs it. It holds no
    CPU: it answers between others' work, like the guard."""
    return KeyRatesActor.options(
        name=KEY_RATES_NAME,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
    ).remote(rate_per_s, burst)
