def shard_options(
    prefix: str, shard: int, shards: int, namespace: str, detached: bool, **options: object
) -> dict[str, object]:
    """Ray options of one named shard actor (`{prefix}-{i}-of-{n}`): found if it exists, so
    every process that needs the shard talks to the same one; detached unless it belongs
    to a simulation that ends with its driver."""
    return {
        "name": f"{prefix}-{shard}-of-{shards}",
        "namespace": namespace,
        "lifetime": "detached" if detached else None,
        "get_if_exists": True,
        **options,
    }
