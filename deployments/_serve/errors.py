"""One error hierarchy mapped once: domain errors to HTTP status and gRPC codes, and the JSON
body every error has: `{"error": {"code": "...", "message": "..."}}`."""

from __future__ import annotations

import grpc

from kiki.errors import (
    Conflict,
    FailedPrecondition,
    Forbidden,
    InvalidInput,
    KikiError,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

# Domain error → (HTTP status, gRPC status). Anything not listed is a 500 / INTERNAL.
ERROR_STATUS: dict[type[KikiError], tuple[int, grpc.StatusCode]] = {
    InvalidInput: (400, grpc.StatusCode.INVALID_ARGUMENT),
    Unauthenticated: (401, grpc.StatusCode.UNAUTHENTICATED),
    Forbidden: (403, grpc.StatusCode.PERMISSION_DENIED),
    NotFound: (404, grpc.StatusCode.NOT_FOUND),
    Conflict: (409, grpc.StatusCode.ABORTED),
    FailedPrecondition: (409, grpc.StatusCode.FAILED_PRECONDITION),
    RateLimited: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Unavailable: (503, grpc.StatusCode.UNAVAILABLE),
}


def status_for(exc: KikiError) -> tuple[int, grpc.StatusCode]:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500, grpc.StatusCode.INTERNAL


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}
