"""KIKI's actors as a whole: the named actors of Ray namespace `kiki` (budget shards, bid-loop
shards, the platform guard, the engage automation, the retraining actor).

They are detached, so they outlive the replicas that created them: neither deleting the Serve
apps nor `serve shutdown` ends them. `kiki down` does, through `stop_kiki_actors`.
"""

from __future__ import annotations

import re

import ray
from ray.util.state import StateApiClient
from ray.util.state.common import ActorState, ListApiOptions, StateResource

from actors.flow.client import ACTOR_PREFIX as BID_LOOP_PREFIX
from actors.flow.client import settle_bid_loops

NAMESPACE = "kiki"
_BID_LOOP_NAME = re.compile(rf"^{BID_LOOP_PREFIX}-\d+-of-(\d+)$")


def kiki_actors(state: StateApiClient, namespace: str = NAMESPACE) -> list[ActorState]:
    """The namespace's actors that are not dead (alive, restarting or still starting), from
    Ray's state API. The client names its cluster (left to guess, the state API fails on a
    machine that runs several Rays) and carries the token."""
    options = ListApiOptions(
        filters=[("ray_namespace", "=", namespace), ("state", "!=", "DEAD")], limit=10_000
    )
    return state.list(StateResource.ACTORS, options=options, raise_on_missing_output=False)


def settle_every_bid_loop(state: StateApiClient, namespace: str = NAMESPACE) -> int:
    """`settle_bid_loops` for every bid loop that exists, whatever its shard count (a cluster
    deployed with `serve deploy` may use another than this machine's settings). Returns the
    audit rows their shards had written."""
    counts = {
        int(match.group(1))
        for actor in kiki_actors(state, namespace)
        if actor.name and (match := _BID_LOOP_NAME.match(actor.name))
    }
    return sum(settle_bid_loops(n, namespace=namespace) for n in sorted(counts))


def stop_kiki_actors(state: StateApiClient, namespace: str = NAMESPACE) -> list[str]:
    """End every named actor of the namespace for good (no restart). Idempotent: an actor
    already gone is skipped. Unnamed actors are not detached (their owner ends them).
    Returns the names ended."""
    ended = []
    for actor in kiki_actors(state, namespace):
        if not actor.name:
            continue
        try:
            handle = ray.get_actor(actor.name, namespace=namespace)
        except ValueError:  # ended meanwhile
            continue
        ray.kill(handle, no_restart=True)
        ended.append(actor.name)
    return sorted(ended)
