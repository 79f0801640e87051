"""SyncValue's domain: customer lifetime value (features, the ZILN model, metrics, baselines).

The public face other services use: the customer features, purchase history, the LTV model
registry and the trained model."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(
    __name__,
    {
        "FEATURE_NAMES": "kiki.value.features",
        "LTV_MODELS": "kiki.value.registry",
        "Transaction": "kiki.value.transactions",
        "TrainedLTVModel": "kiki.value.ziln",
        "compute_features": "kiki.value.features",
        "end_of_day": "kiki.value.transactions:end_of",
        "insert_transactions": "kiki.value.transactions:insert",
        "purchase_history": "kiki.value.transactions:history",
        "spend_between": "kiki.value.training",
    },
)
