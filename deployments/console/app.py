"""The console (`/console`): the KIKI web app a growth team works in.

The server side is thin on purpose. It serves the pages (plain ES modules under `static/`,
the chart library copied there from npm by `make`) and the sign-in: an API key is exchanged
for a session whose token the browser keeps in an HttpOnly, SameSite=Strict cookie (Secure
over HTTPS) and the database keeps hashed (kiki.auth.open_session). The pages then call the
services' own APIs on the same origin with that cookie, so every change goes through the one
validation and scope check each service already has; the console never forwards a request.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from fastapi import Body, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from ray.serve import Application

from deployments._serve import (
    SESSION_COOKIE,
    AnyKey,
    AppArgs,
    Connection,
    WhoAmI,
    create_service_api,
    plain_ingress,
    runtime_of,
)
from kiki.auth import close_session, open_session
from kiki.config import CONSOLE_APP
from kiki.errors import Unauthenticated

STATIC = Path(__file__).resolve().parent / "static"


class ConsoleArgs(AppArgs):
    """The console has no options of its own (a sign-in lasts KIKI_CONSOLE_SESSION_H)."""


class SignIn(BaseModel):
    api_key: str = Field(min_length=1, max_length=200, description="a KIKI API key")


class SessionState(BaseModel):
    """Whether this browser is signed in, and as whom: a page asks this first, and not being
    signed in is an answer, not an error."""

    signed_in: bool
    who: WhoAmI | None = None


api = create_service_api(
    CONSOLE_APP,
    "KIKI console",
    "The web console's sign-in; its pages call the services' own APIs with the session.",
)
api.mount("/static", StaticFiles(directory=STATIC), name="static")


@api.get("/", include_in_schema=False)
async def page() -> FileResponse:
    # no-cache: a browser revalidates the page, so a new release's modules load at once.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def _secure(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


@api.get("/api/v1/session", response_model=SessionState, tags=["session"])
async def session_state(request: Request) -> SessionState:
    """This browser's sign-in: ended once signed out, expired, or its key revoked."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return SessionState(signed_in=False)
    try:
        grant = await runtime_of(request).grant(None, token)
    except Unauthenticated:
        return SessionState(signed_in=False)
    return SessionState(signed_in=True, who=WhoAmI.of(grant, CONSOLE_APP))


@api.post("/api/v1/session", response_model=SessionState, tags=["session"])
async def sign_in(request: Request, body: Annotated[SignIn, Body()], conn: Connection) -> Response:
    """Sign in with an API key: the answer sets the session cookie (the key itself is never
    stored, in the browser or on the server). 401 for an unknown, revoked or expired key."""
    hours = runtime_of(request).settings.console_session_h
    token, grant = await open_session(conn, body.api_key.strip(), timedelta(hours=hours))
    state = SessionState(signed_in=True, who=WhoAmI.of(grant, CONSOLE_APP))
    response = Response(state.model_dump_json(), media_type="application/json")
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@api.delete("/api/v1/session", status_code=204, tags=["session"])
async def sign_out(request: Request, grant: AnyKey, conn: Connection) -> Response:
    """End this browser's session and clear its cookie."""
    if token := request.cookies.get(SESSION_COOKIE):
        await close_session(conn, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


ConsoleIngress = plain_ingress(CONSOLE_APP, api)


def build_app(args: ConsoleArgs) -> Application:
    return ConsoleIngress.bind(ConsoleArgs.given(args))
