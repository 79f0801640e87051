"""Each bidding unit's segment value, from SyncValue, without a tick ever waiting for it."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve

from actors.resilience import within
from kiki.flow.engine import BidEngine

logger = logging.getLogger("kiki.flow")


class SegmentValues:
    """One batched call to SyncValue for all of a shard's segments, never awaited by a tick:
    a tick uses the answer of the last call that finished (values change daily, ticks every
    few seconds), and starts the next call when none is in flight."""

    def __init__(self, app: str | None, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s
        self._keys: list[tuple[str, str]] = []  # distinct (tenant, segment)
        self._unit_key = np.zeros(0, dtype=np.int64)  # unit -> index in _keys
        self._values: dict[tuple[str, str], int] = {}
        self._call: asyncio.Task[dict[str, dict[str, int]]] | None = None
        self._error: str | None = None

    def rebuild(self, engine: BidEngine, tenants: list[str]) -> None:
        unit_keys = [
            (tenants[c], segment)
            for c, segment in zip(engine.unit_campaign.tolist(), engine.unit_segment, strict=True)
        ]
        self._keys = sorted(set(unit_keys))
        index = {k: i for i, k in enumerate(self._keys)}
        self._unit_key = np.array([index[k] for k in unit_keys], dtype=np.int64)

    def current(self) -> np.ndarray:
        """Each unit's segment value in micros; 0 = unknown (the ad group's default applies)."""
        call = self._call
        if call is not None and call.done():
            self._call = None
            error = repr(call.exception()) if call.exception() else None
            if error is None:
                for tenant, found in call.result().items():
                    for segment, micros in found.items():
                        self._values[(tenant, segment)] = micros
            elif error != self._error:  # once per distinct failure, not every tick
                logger.warning("segment values unavailable", extra={"error": error})
            self._error = error
        if self.app and self._keys and self._call is None:
            self._call = asyncio.get_running_loop().create_task(self._fetch())
        per_key = np.array([self._values.get(k, 0) for k in self._keys], np.int64)
        return per_key[self._unit_key] if len(per_key) else np.zeros(0, np.int64)

    async def _fetch(self) -> dict[str, dict[str, int]]:
        requests: dict[str, list[str]] = {}
        for tenant, segment in self._keys:
            requests.setdefault(tenant, []).append(segment)
        handle = serve.get_app_handle(self.app)
        return await within(handle.segment_values.remote(requests), self.timeout_s, "SyncValue")
