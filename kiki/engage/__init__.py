"""SyncEngage: churn prediction, cohorts and segments, consent-aware retention messaging.

Its public face: the churn model registry, the trained model and the use cases."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(
    __name__,
    {
        "CHURN_MODELS": "kiki.engage.registry",
        "EngageService": "kiki.engage.service",
        "TrainedChurnModel": "kiki.engage.churn",
    },
)
