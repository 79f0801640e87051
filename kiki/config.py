"""Settings from KIKI_* environment variables.

One `Settings` object is read once per process. A bad value is reported as a one-line
`ConfigError` that names the variable and says what a valid value looks like.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kiki.artifacts import url_problem
from kiki.errors import ConfigError

SERVICES: tuple[str, ...] = ("value", "shield", "flow", "create", "engage", "billing")
# The web console (`/console`): pages over the services' own APIs, not a service itself.
CONSOLE_APP = "console"
# The app on the proxy root (`/`): `GET /health` over every service, 404 elsewhere.
ROOT_APP = "root"
# Every Serve app KIKI deploys.
APPS: tuple[str, ...] = (*SERVICES, CONSOLE_APP, ROOT_APP)
# Settings that carry credentials besides those typed SecretStr. They never travel in Ray's
# runtime_env, which the dashboard and `serve status` show: a local run hands them to the
# raylet's own environment instead.
SECRET_SETTINGS: frozenset[str] = frozenset(
    {
        "database_url",
        "stripe_api_key",
        "stripe_webhook_secret",
        "paypal_client_secret",
        "smtp_password",
        "twilio_auth_token",
        "fcm_access_token",
        "fcm_service_account",
    }
)


class Settings(BaseSettings):
    """Every knob of the platform; the environment variable is KIKI_<FIELD> unless noted."""

    model_config = SettingsConfigDict(env_prefix="KIKI_", extra="ignore")

    home: Path = Field(Path(".kiki"), description="state folder: embedded PostgreSQL, logs, keys")
    database_url: str | None = Field(
        None, description="postgresql://user:pass@host:port/db; unset = embedded PostgreSQL"
    )
    artifacts_url: str | None = Field(
        None,
        description="where model weights, Tune results, creative images and plots are kept: "
        "file:///path or s3://bucket/prefix; unset = file://$KIKI_HOME/artifacts (one machine)",
    )
    artifacts_endpoint_url: str | None = Field(
        None, description="endpoint of an S3-compatible store that is not AWS (MinIO, Ceph ...)"
    )
    pg_port: int = Field(5433, ge=1, le=65535, description="embedded PostgreSQL TCP port")
    wal_archive: bool = Field(
        False,
        description="embedded PostgreSQL archives its WAL to the artifact store (wal/), so "
        "`kiki db restore --until` can recover to any moment after a base backup",
    )
    wal_archive_timeout_s: int = Field(
        60, ge=1, le=3600, description="a written WAL segment is archived at least this often"
    )
    db_pool_min: int = Field(1, ge=0, le=100)
    db_pool_max: int = Field(10, ge=1, le=1000)
    ray_address: str | None = Field(
        None,
        validation_alias=AliasChoices("RAY_ADDRESS", "KIKI_RAY_ADDRESS"),
        description="Ray cluster to join; unset = start a local Ray",
    )
    # The proxy serves other machines by default; KIKI_HTTP_HOST=127.0.0.1 keeps it local.
    http_host: str = "0.0.0.0"  # nosec B104
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(50051, ge=1, le=65535)
    metrics_port: int = Field(8080, ge=1, le=65535, description="Ray metrics export port")
    ingress: Literal["auto", "haproxy", "proxy"] = Field(
        "auto",
        description="HTTP ingress of a local run: Ray Serve's HAProxy ingress or its Python "
        "proxy; auto = HAProxy when the haproxy binary is installed",
    )
    replica_cpus: float = Field(
        0.1, gt=0, le=64, description="num_cpus per Serve replica on a local run"
    )
    serve_config: Path | None = Field(None, description="serve_config.yaml to deploy")
    auth_cache_ttl_s: float = Field(30.0, ge=0, description="API-key lookup cache lifetime")
    console_session_h: float = Field(
        12.0, gt=0, le=24 * 30, description="hours a console sign-in lasts (the key's life caps it)"
    )
    budget_shards: int = Field(2, ge=1, le=256, description="budget actors campaigns shard over")
    flow_shards: int = Field(2, ge=1, le=256, description="bid-loop actors campaigns shard over")
    flow_tick_s: float = Field(2.0, gt=0, le=3600, description="seconds between bid-loop ticks")
    platform_credentials: Path | None = Field(
        None,
        description="JSON file with each ad platform's credentials: set = the bid loop bids on "
        "the real platforms (the live market); unset = the sandbox exchange",
    )
    flow_spend_poll_s: float = Field(
        60.0, gt=0, description="seconds between spend reports fetched from live platforms"
    )
    reservation_ttl_s: float = Field(900.0, gt=0, description="unclaimed reservations expire")
    actor_call_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="deadline of every call to a long-lived actor or another deployment; past "
        "it the caller answers 503 with Retry-After instead of waiting",
    )
    health_probe_timeout_s: float = Field(
        3.0, gt=0, le=60, description="deadline of each dependency probe of /health"
    )
    health_grace_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="a new replica's time to reach its dependencies before Serve's health check "
        "counts their failure (and replaces it)",
    )
    api_rate_per_s: float = Field(
        500.0,
        gt=0,
        description="requests per second per API key, cluster-wide (token bucket)",
    )
    api_burst: int = Field(1000, ge=1, description="token-bucket burst per API key")
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description="largest HTTP request body (413 past it) and gRPC message "
        "(RESOURCE_EXHAUSTED) accepted; the default holds the largest batches the API takes",
    )
    platform_rate_per_s: float = Field(50.0, gt=0, description="calls per second per ad platform")
    platform_burst: int = Field(100, ge=1)
    stripe_api_base: str = Field(
        "https://api.stripe.com", description="Stripe's API, or a Stripe-compatible server"
    )
    stripe_api_key: str | None = Field(None, description="secret key; unset = no payments")
    stripe_webhook_secret: str | None = Field(
        None, description="signing secret of the Stripe endpoint POST /billing/webhooks/stripe"
    )
    stripe_webhook_tolerance_s: int = Field(
        300, ge=1, le=3600, description="oldest Stripe event signature accepted"
    )
    paypal_api_base: str = Field(
        "https://api-m.paypal.com",
        description="PayPal's REST API (https://api-m.sandbox.paypal.com for the sandbox)",
    )
    paypal_client_id: str | None = Field(None, description="REST app client id; unset = no PayPal")
    paypal_client_secret: str | None = Field(None, description="REST app secret")
    paypal_webhook_id: str | None = Field(
        None, description="id PayPal gave the webhook pointing at POST /billing/webhooks/paypal"
    )
    paypal_webhook_tolerance_s: int = Field(
        300, ge=1, le=3600, description="oldest PayPal event transmission accepted"
    )
    paypal_redirect_base: str = Field(
        "http://127.0.0.1:8000/billing",
        description="the billing app as payers' browsers reach it: PayPal sends a payer back "
        "to its /paypal/return or /paypal/cancel route",
    )
    paypal_return_url: str = Field(
        "https://example.com/paid",
        description="the page KIKI sends a payer to after PayPal's approval (with ?invoice= and "
        "&status=)",
    )
    paypal_cancel_url: str = Field(
        "https://example.com/canceled",
        description="the page KIKI sends a payer to who cancelled at PayPal (with ?invoice= and "
        "&status=)",
    )
    paypal_approval_ttl_s: int = Field(
        10_800,
        ge=60,
        description="how long an approval link waits for the payer before the payment counts "
        "as failed (PayPal lets an unapproved order lapse after 3 hours)",
    )
    billing_worker_s: float = Field(
        10.0, gt=0, description="seconds between the billing worker's rounds (dunning, webhooks)"
    )
    retrain_interval: float = Field(
        604_800.0,
        ge=0,
        description="seconds between scheduled retrains of each tenant's production models "
        "(LTV and churn); 0 = retrain only when drift marks the LTV model stale",
    )
    retrain_check_s: float = Field(
        3600.0, gt=0, description="how often the retraining actor checks schedules and drift"
    )
    decisions_retention_days: int = Field(
        30,
        ge=1,
        description="days of the bid loop's audit trail kept in PostgreSQL; older days are "
        "exported to Parquet in the artifact store and dropped (`kiki db retention`)",
    )
    billing_events_retention_days: int = Field(
        0,
        ge=0,
        description="days of usage events (`billing_events`) kept in PostgreSQL; older days "
        "no invoice still needs go to Parquet in the artifact store and are dropped. 0 = "
        "forever (the default: invoices' supporting records may have to be kept for years)",
    )
    engage_messages_retention_days: int = Field(
        90,
        ge=0,
        description="days of SyncEngage's message delivery log (`engage_messages`) kept; "
        "older days go to Parquet in the artifact store and are dropped. 0 = forever",
    )
    webhook_deliveries_retention_days: int = Field(
        90,
        ge=0,
        description="days of the tenants' webhook deliveries kept; older days without a "
        "pending delivery go to Parquet in the artifact store and are dropped. 0 = forever",
    )
    decision_log_max_bytes: int = Field(
        256 * 2**20,
        ge=0,
        description="a `decision:` log file rotates past this size (to .1, .2, ...); 0 = never",
    )
    decision_log_backups: int = Field(8, ge=1, description="rotated decision log files kept")
    retention_check_s: float = Field(
        3600.0, gt=0, description="how often the retention job runs (partitions ahead, exports)"
    )
    drift_check_s: float = Field(
        300.0,
        gt=0,
        description="how often the retraining actor refreshes every production LTV model's "
        "drift gauges and stale flag",
    )
    retrain_trials: int = Field(6, ge=1, le=200, description="Ray Tune trials per retrain")
    retrain_challenger_percent: int = Field(
        10, ge=1, le=99, description="customers a retrained LTV model serves before its verdict"
    )
    retrain_min_gain: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="a challenger is promoted only when its holdout error is at least this "
        "share below the champion's",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    creative_model: Path | None = Field(
        None,
        description="diffusers text-to-image folder (SD 1.5, SD-Turbo, SDXL-Turbo) saved by "
        "save_pretrained; unset = a small random-weight pipeline (real diffusion, images with no "
        "meaning: for tests and demos without weights)",
    )
    creative_steps: int = Field(4, ge=1, le=150, description="default denoising steps")
    creative_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="deadline of one generate call on the generator (a GPU replica scaled to "
        "zero may take minutes to start); past it the answer is 503 with Retry-After",
    )
    creative_guidance: float = Field(
        0.0, ge=0, le=30, description="classifier-free guidance; 0 for Turbo models, ~7.5 for SD"
    )
    creative_resolution: int | None = Field(
        None, ge=32, le=2048, description="side of the generation square; unset = model's native"
    )
    image_safety_model: Path | None = Field(
        None, description="transformers image-classification folder that flags unsafe images"
    )
    image_safety_threshold: float = Field(
        0.5, gt=0, lt=1, description="unsafe-label probability at which an image is withheld"
    )
    dev_tenant: str = Field("dev", min_length=1, max_length=64)
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key that encrypts stored credentials (CRM sources); unset = one "
        "generated once into $KIKI_HOME/secret.key",
    )
    # SyncEngage's channels: a channel whose settings are unset is not offered.
    smtp_host: str | None = Field(None, description="SMTP server for email; unset = no email")
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_sender: str = Field("kiki@localhost", description="From address of email")
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    twilio_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = Field(None, description="AC...; unset = no SMS")
    twilio_auth_token: str | None = None
    twilio_sender: str | None = Field(None, description="E.164 From number or MG... service")
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_project_id: str | None = Field(None, description="Firebase project; unset = no push")
    fcm_access_token: str | None = Field(
        None, description="OAuth 2.0 token with the firebase.messaging scope"
    )
    fcm_service_account: str | None = Field(
        None,
        description="the service account key file's JSON; tokens are minted and renewed from it",
    )
    engage_cap_per_day: int = Field(3, ge=1, description="messages per customer per 24 hours")
    engage_cap_per_week: int = Field(10, ge=1, description="messages per customer per 7 days")
    engage_automation_interval_s: float = Field(
        300.0, gt=0, description="how often the engage actor syncs CRMs and runs retention rules"
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "must start with postgresql:// (e.g. postgresql://kiki:secret@localhost:5432/kiki)"
            )
        return value

    @field_validator("fcm_service_account")
    @classmethod
    def _check_service_account(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            info = json.loads(value)
        except ValueError:
            raise ValueError("must be the key file's JSON (its contents, not its path)") from None
        missing = [
            k
            for k in ("type", "client_email", "private_key")
            if not isinstance(info, dict) or k not in info
        ]
        if missing or info["type"] != "service_account":
            raise ValueError(f"not a service account key: {', '.join(missing) or 'type'} wrong")
        return value

    @field_validator("artifacts_url", "artifacts_endpoint_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("artifacts_url")
    @classmethod
    def _check_artifacts_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := url_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("creative_model", "image_safety_model", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def wal_spool(self) -> Path:
        """Where the embedded server puts finished WAL segments until they are shipped."""
        return self.home / "wal-spool"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into one clear line."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        env = "RAY_ADDRESS" if field == "ray_address" else f"KIKI_{field.upper()}"
        raise ConfigError(
            f"{env}={first.get('input')!r} is not valid: {first['msg']}. "
            f"Fix or unset {env} and try again."
        ) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
