"""How many nodes a number of campaigns needs, projected from what one `kiki bench flow` run
measured per shard. Pure arithmetic, so the README's figures can be recomputed and tested.

The model: every tick each campaign's ad groups get one decision each (the bid-loop shards'
work, CPU per decision), and each campaign's budget moves once (the budget shards' work, CPU
per campaign and tick); the guard is one actor for the whole cluster. A shard is one Python
process, so it uses at most one core: each kind needs enough shards to stay under `usable` of
a core, and the nodes enough vCPUs to hold them all at `usable` of their vCPUs (the rest is
Ray's own processes and headroom for a busy tick). A bid-loop shard also waits (on its budget
round trip, the audit trail's COPY): it must finish its tick within `usable` of the interval
at the decisions/s per shard the run measured on the wall clock, which can ask for more
bid-loop shards than their CPU does. One node more is kept spare, so losing a
node (`kiki bench node-loss`) leaves room for its shards to restart elsewhere.
"""

from __future__ import annotations

from math import ceil

from pydantic import BaseModel, Field


class ShardCosts(BaseModel):
    """One run's totals: what the projection scales."""

    campaigns: int = Field(gt=0)
    ad_groups: int = Field(20, gt=0, description="per campaign: 5 platforms x 4 ad groups")
    ticks: int = Field(gt=0)
    wall_s: float = Field(gt=0)
    decisions: int = Field(gt=0)
    bidloop_shards: int = Field(gt=0)
    budget_shards: int = Field(gt=0)
    bidloop_cpu_s: float = Field(ge=0, description="summed over the bid-loop shards")
    budget_cpu_s: float = Field(ge=0, description="summed over the budget shards")
    guard_cpu_s: float = Field(ge=0)
    budget_ms_per_tick: float = Field(ge=0, description="the slowest shard's budget phase")

    @property
    def decisions_per_s_per_shard(self) -> float:
        return self.decisions / self.wall_s / self.bidloop_shards

    @property
    def bidloop_cpu_us_per_decision(self) -> float:
        return self.bidloop_cpu_s / self.decisions * 1e6

    @property
    def budget_cpu_us_per_campaign_tick(self) -> float:
        return self.budget_cpu_s / (self.campaigns * self.ticks) * 1e6

    @property
    def guard_cpu_us_per_campaign_tick(self) -> float:
        return self.guard_cpu_s / (self.campaigns * self.ticks) * 1e6


class Projection(BaseModel):
    campaigns: int
    tick_s: float
    vcpus: int
    usable: float
    decisions_per_s: float
    bidloop_cores: float
    budget_cores: float
    guard_cores: float
    bidloop_shards: int
    budget_shards: int
    nodes: int = Field(description="to hold the load")
    nodes_with_spare: int = Field(description="one more: a node's loss leaves room")


def project(
    costs: ShardCosts,
    campaigns: int,
    tick_s: float = 2.0,
    vcpus: int = 8,
    usable: float = 0.75,
) -> Projection:
    """Cores, shards and nodes of `vcpus` for `campaigns` campaigns at `tick_s` ticks."""
    campaign_ticks_per_s = campaigns / tick_s
    decisions_per_s = campaign_ticks_per_s * costs.ad_groups
    bidloop = decisions_per_s * costs.bidloop_cpu_us_per_decision / 1e6
    budget = campaign_ticks_per_s * costs.budget_cpu_us_per_campaign_tick / 1e6
    guard = campaign_ticks_per_s * costs.guard_cpu_us_per_campaign_tick / 1e6
    nodes = max(1, ceil((bidloop + budget + guard) / (vcpus * usable)))
    return Projection(
        campaigns=campaigns,
        tick_s=tick_s,
        vcpus=vcpus,
        usable=usable,
        decisions_per_s=decisions_per_s,
        bidloop_cores=bidloop,
        budget_cores=budget,
        guard_cores=guard,
        bidloop_shards=max(
            1,
            ceil(bidloop / usable),
            ceil(decisions_per_s / (costs.decisions_per_s_per_shard * usable)),
        ),
        budget_shards=max(1, ceil(budget / usable)),
        nodes=nodes,
        nodes_with_spare=nodes + 1,
    )


def explain(costs: ShardCosts, p: Projection) -> str:
    """The arithmetic, one line per step, with the measured figures in it."""
    tick_s, vcpus, usable = p.tick_s, p.vcpus, p.usable
    per_s = p.campaigns / tick_s
    return "\n".join(
        [
            f"{p.campaigns:,} campaigns at {tick_s:g} s ticks: {per_s:,.0f} campaign-ticks/s, "
            f"x {costs.ad_groups} ad groups = {p.decisions_per_s:,.0f} decisions/s",
            f"  bid loop: {p.decisions_per_s:,.0f} x {costs.bidloop_cpu_us_per_decision:.1f} "
            f"us CPU/decision = {p.bidloop_cores:.2f} cores; {p.bidloop_shards} shards, each "
            f"at <= {usable:.0%} of a core and of the tick at "
            f"{costs.decisions_per_s_per_shard:,.0f} decisions/s a shard",
            f"  budget: {per_s:,.0f} x {costs.budget_cpu_us_per_campaign_tick:.1f} us "
            f"CPU/campaign-tick = {p.budget_cores:.2f} cores -> {p.budget_shards} shards",
            f"  guard (one actor): {per_s:,.0f} x {costs.guard_cpu_us_per_campaign_tick:.1f} "
            f"us = {p.guard_cores:.2f} cores"
            + ("" if p.guard_cores <= usable else " (over one process's share: shard it)"),
            f"  nodes: {p.bidloop_cores + p.budget_cores + p.guard_cores:.2f} cores / "
            f"({vcpus} vCPU x {usable:.0%}) -> {p.nodes}, {p.nodes_with_spare} with one spare",
        ]
    )
