"""Ports chosen now and bound later by another process (HAProxy's stats and metrics)."""

from __future__ import annotations

from pathlib import Path

from kiki.db.embedded import port_in_use, port_outside_ephemeral_range


def test_a_port_outside_the_ephemeral_range_is_free_and_below_it() -> None:
    first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    port = port_outside_ephemeral_range()
    assert 20_000 <= port < first and not port_in_use(port, "")
    # Two listeners chosen before either binds get two ports.
    assert port_outside_ephemeral_range(taken=[port]) != port
