"""SyncFlow: campaigns, pacing, bidding, ad-platform connectors and the audit trail."""
