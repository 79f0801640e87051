"""What a bid-loop shard is set up with: one validated object, made by whoever creates the
shards (the flow app from the platform's settings, `kiki simulate`, tests)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kiki.flow.exchange import ExchangeConfig
from kiki.flow.pacing import ControllerKind
from kiki.shield import RateLimitConfig


class BidLoopConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tick_s: float = Field(2.0, gt=0, description="seconds between ticks")
    namespace: str = Field("kiki", description="Ray namespace of the shards and their peers")
    budget_shards: int = Field(2, ge=1, description="budget actors the campaigns shard over")
    autorun: bool = Field(True, description="tick on the wall clock; False: a driver ticks")
    detached: bool = Field(True, description="outlive the driver (False: a simulation's)")
    tenant_id: str | None = Field(None, description="run only this tenant (a simulation)")
    exchange: ExchangeConfig = ExchangeConfig()
    seed: int = 0
    outages: tuple[str, ...] = Field((), description="sandbox platforms that fail every call")
    value_app: str | None = Field("value", description="SyncValue's app; None: ad group values")
    credentials: dict[str, Any] | None = Field(
        None, description="raw platform credentials: the live market; None: the sandbox"
    )
    spend_poll_s: float = Field(60.0, gt=0)
    controller: ControllerKind = Field("curve", description="the pacing controller")
    sandbox_tick_cap: bool = Field(
        True, description="the sandbox caps each tick (False: the live market's conditions)"
    )
    sandbox_report_s: float = Field(
        0.0, ge=0, description="the sandbox reports spend every this many seconds (0: each tick)"
    )
    cap_push_threshold: float = Field(
        0.1, ge=0, description="live market: a daily budget rise worth a push (fraction)"
    )
    log_dir: str | None = Field(None, description="folder of the `decision:` log files")
    log_max_bytes: int = Field(
        256 * 2**20, ge=0, description="a decision log file rotates past this size; 0 = never"
    )
    log_backups: int = Field(8, ge=1, description="rotated decision log files kept per shard")
    guard_rate: RateLimitConfig | None = None
    lease_ticks: int = Field(10, ge=1, description="ticks a budget lease covers")
    call_timeout_s: float = Field(10.0, gt=0, description="deadline of calls to other actors")
