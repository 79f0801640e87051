"""SyncValue as a Serve application; `app.build_app` is what `serve_config.yaml` names."""
