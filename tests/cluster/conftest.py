"""Tests that start Ray clusters of their own (several nodes, the fake autoscaler, `ray up`).

They run in their own pytest process (`make test` runs this folder after the rest): a process
joins one Ray cluster at a time, and the other layers keep one Ray for their whole session.
Every test here is marked `cluster`.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.cluster)
