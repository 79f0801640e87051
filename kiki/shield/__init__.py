"""SyncShield: budget governance, and the breakers and rate limits that guard it."""
