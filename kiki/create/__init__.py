"""SyncCreate: ad creatives (generation, platform formats, brand compliance, safety, A/B)."""
