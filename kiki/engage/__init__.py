"""SyncEngage: churn prediction, cohorts and segments, consent-aware retention messaging."""
