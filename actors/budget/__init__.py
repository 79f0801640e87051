"""Budget actors: a few long-lived shards, each holding the budget book of many campaigns
(shard.py), and the client that routes commands to them (client.py)."""

from actors.budget.client import ACTOR_PREFIX, BudgetClient
from actors.budget.shard import BudgetShard

__all__ = ["ACTOR_PREFIX", "BudgetClient", "BudgetShard"]
