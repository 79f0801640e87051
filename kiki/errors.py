"""Domain exceptions. The Serve layer maps each kind to an HTTP and a gRPC status code.

Every exception carries a stable machine-readable `code` and a message written for the
person who has to fix the problem: what is wrong and how to fix it.
"""

from __future__ import annotations


class KikiError(Exception):
    """Base of every error the platform raises on purpose."""

    code = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s  # when set, the HTTP answer carries Retry-After
        if code is not None:
            self.code = code


class ConfigError(KikiError):
    """A setting is missing or malformed."""

    code = "config_invalid"


class InvalidInput(KikiError):
    """The caller sent something the platform cannot accept."""

    code = "invalid_input"


class Unauthenticated(KikiError):
    """No API key, or a key that is unknown or revoked."""

    code = "unauthenticated"


class Forbidden(KikiError):
    """A known key without the scope the call needs (the scope is named, the data is not)."""

    code = "forbidden"


class NotFound(KikiError):
    """The thing does not exist, or belongs to another tenant (never say which)."""

    code = "not_found"


class Conflict(KikiError):
    """The request clashes with the current state (duplicate, wrong lifecycle step)."""

    code = "conflict"


class RateLimited(KikiError):
    """Too many calls; retry after `retry_after_s` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class Unavailable(KikiError):
    """A dependency (database, model, ad platform) cannot serve the request right now."""

    code = "unavailable"


class FailedPrecondition(KikiError):
    """The platform is not ready for this call yet (e.g. no model trained)."""

    code = "failed_precondition"
