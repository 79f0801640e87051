"""SyncValue's domain: customer lifetime value (features, the ZILN model, metrics, baselines)."""
