"""SyncFlow: campaigns, pacing, bidding, ad-platform connectors and the audit trail.

The public face other services use: an audience segment's members (SyncValue values them)."""

from kiki.faces import lazy

__all__, __getattr__ = lazy(__name__, {"segment_members": "kiki.flow.segments:members"})
