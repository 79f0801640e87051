"""Bid-loop actors: a few long-lived shards, each running the bid loop of many campaigns
(shard.py), its audit trail (audit.py) and SyncValue's segment values (values.py); the client
(client.py) creates or finds them. Set up with one `BidLoopConfig`."""

from actors.flow.client import BidLoopClient, settle_bid_loops
from actors.flow.config import BidLoopConfig
from actors.flow.reports import Heartbeat, ShardStats, TickReport

__all__ = ["BidLoopClient", "BidLoopConfig", "Heartbeat", "ShardStats", "TickReport",
           "settle_bid_loops"]  # fmt: skip
