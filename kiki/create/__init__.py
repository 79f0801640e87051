"""SyncCreate: ad creatives (generation, platform formats, brand compliance, safety, A/B).

Its public face: a generation request, the studio that plans and checks the variants, and
the placements it renders for."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(
    __name__,
    {
        "PLACEMENTS": "kiki.create.formats",
        "GenerateRequest": "kiki.create.brief",
        "Studio": "kiki.create.studio",
    },
)
