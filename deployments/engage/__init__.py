"""SyncEngage's Serve application: `app.build_app` is its builder."""
