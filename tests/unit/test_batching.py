import asyncio

import pytest

from kiki.batching import KeyedBatcher


def test_concurrent_callers_share_one_call_per_key() -> None:
    calls: list[tuple[str, list[int]]] = []

    async def squares(key: str, items: list[int]) -> dict[int, int]:
        calls.append((key, items))
        return {i: i * i for i in items}

    async def scenario() -> None:
        batcher = KeyedBatcher(squares, max_wait_s=0.01)
        a12, a3, b4 = await asyncio.gather(
            batcher.submit("a", [1, 2]), batcher.submit("a", [3]), batcher.submit("b", [4])
        )
        assert a12 is a3 and a12 == {1: 1, 2: 4, 3: 9}  # one shared answer per key
        assert b4 == {4: 16}
        assert sorted(calls) == [("a", [1, 2, 3]), ("b", [4])]

    asyncio.run(scenario())


def test_a_full_batch_goes_at_once_and_errors_reach_every_caller() -> None:
    async def boom(key: str, items: list[int]) -> dict[int, int]:
        raise RuntimeError("down")

    async def scenario() -> None:
        batcher = KeyedBatcher(boom, max_wait_s=10, max_items=2)
        with pytest.raises(RuntimeError, match="down"):
            await asyncio.wait_for(
                asyncio.gather(batcher.submit("k", [1]), batcher.submit("k", [2])), timeout=1
            )

    asyncio.run(scenario())
