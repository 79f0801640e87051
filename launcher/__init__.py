"""The `kiki` command and the code that starts the platform: PostgreSQL, migrations, Ray, Serve.

It sits above `kiki/` (the Ray-free domain) and `deployments/`, so the one-way rule holds:
nothing under `kiki/` imports Ray, and nothing imports this package.
"""
