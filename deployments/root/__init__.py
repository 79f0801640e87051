"""The proxy root (`/`): `GET /health` over every service."""
