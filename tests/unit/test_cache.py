"""RefreshingCache: one build per key however many wait, stale values served while the next
one builds, and failures that neither lose a value nor wedge a key."""

import asyncio

import pytest

from kiki.cache import RefreshingCache


class Builder:
    """Builds "v1", "v2", … once released, counting the builds."""

    def __init__(self) -> None:
        self.builds = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> str:
        self.builds += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("scoring failed")
        return f"v{self.builds}"


async def holding_v1() -> tuple[RefreshingCache[str, str], Builder, list[float]]:
    """A cache on a clock of its own (now[0]) holding "v1" for "t", built at 0."""
    now = [0.0]
    cache: RefreshingCache[str, str] = RefreshingCache(
        4, fresh_s=60, max_stale_s=600, timer=lambda: now[0]
    )
    build = Builder()
    build.release.set()
    assert await cache.get("t", build) == "v1"
    return cache, build, now


def test_concurrent_misses_share_one_build_and_a_quitter_does_not_cancel_it() -> None:
    async def main() -> None:
        cache: RefreshingCache[str, str] = RefreshingCache(4, fresh_s=60, max_stale_s=600)
        build = Builder()
        quitter = asyncio.create_task(cache.get("t", build))
        waiters = [asyncio.create_task(cache.get("t", build)) for _ in range(3)]
        await asyncio.sleep(0)
        quitter.cancel()
        build.release.set()
        assert await asyncio.gather(*waiters) == ["v1"] * 3
        assert build.builds == 1

    asyncio.run(main())


def test_a_stale_value_is_served_at_once_while_one_rebuild_runs() -> None:
    async def main() -> None:
        cache, build, now = await holding_v1()
        build.release.clear()
        now[0] = 61.0
        assert [await cache.get("t", build) for _ in range(3)] == ["v1"] * 3
        await asyncio.sleep(0)  # the rebuild's task starts
        assert build.builds == 2  # one rebuild, not one per read
        build.release.set()
        await asyncio.sleep(0.01)
        assert await cache.get("t", build) == "v2"
        assert build.builds == 2  # the new value is fresh again

    asyncio.run(main())


def test_a_failed_rebuild_keeps_the_stale_value_and_the_next_read_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        cache, build, now = await holding_v1()
        now[0], build.fail = 61.0, True
        assert await cache.get("t", build) == "v1"
        await asyncio.sleep(0.01)
        assert "refreshing a cached value failed" in caplog.text
        build.fail = False
        assert await cache.get("t", build) == "v1"
        await asyncio.sleep(0.01)
        assert await cache.get("t", build) == "v3"

    asyncio.run(main())


def test_a_failed_first_build_reaches_every_waiter_and_is_not_kept() -> None:
    async def main() -> None:
        cache: RefreshingCache[str, str] = RefreshingCache(4, fresh_s=60, max_stale_s=600)
        build = Builder()
        build.fail = True
        waiters = [asyncio.create_task(cache.get("t", build)) for _ in range(2)]
        await asyncio.sleep(0)
        build.release.set()
        for outcome in await asyncio.gather(*waiters, return_exceptions=True):
            assert isinstance(outcome, RuntimeError)
        build.fail = False
        assert await cache.get("t", build) == "v2"

    asyncio.run(main())


def test_too_stale_a_value_or_a_read_that_acts_waits_for_the_rebuild() -> None:
    async def main() -> None:
        cache, build, now = await holding_v1()
        now[0] = 61.0
        assert await cache.get("t", build, stale_ok=False) == "v2"
        now[0] = 61.0 + 600
        assert await cache.get("t", build) == "v3"

    asyncio.run(main())
