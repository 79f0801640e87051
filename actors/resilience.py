"""What keeps a long-lived actor serving and its callers answered.

- `within`: every call to another actor or deployment has a deadline; past it (or when the
  callee's process is gone) the caller gets `Unavailable` (HTTP 503 with Retry-After),
  never a hang.
- `command`: a command that fails unexpectedly answers its own caller with an internal error,
  is logged with its arguments and counted; the actor goes on serving the others.
- `Supervisor`: an actor's background tasks (group commit, tick loop, audit writer,
  schedules) are restarted when they die, and every restart is counted.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import reprlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util import metrics

from kiki.errors import KikiError, Unavailable

logger = logging.getLogger("kiki.actors")
T = TypeVar("T")
P = ParamSpec("P")
# The callee's process died or is restarting: worth a retry shortly, like a missed deadline.
_GONE = (RayActorError, ActorDiedError, ActorUnavailableError)
_short = reprlib.Repr()  # arguments in logs: long values cut short
_short.maxstring = _short.maxother = 80


async def within(call: Awaitable[T], seconds: float, what: str) -> T:
    """Await a call to another actor or deployment for at most `seconds`."""
    try:
        return await asyncio.wait_for(call, seconds)
    except TimeoutError:
        raise Unavailable(
            f"{what} did not answer within {seconds:g} s; retry shortly",
            code="deadline_exceeded",
            retry_after_s=1.0,
        ) from None
    except _GONE as exc:
        raise Unavailable(
            f"{what} is restarting ({exc.__class__.__name__}); retry shortly", retry_after_s=1.0
        ) from None


class InternalError(KikiError):
    """A command failed for a reason that is a bug, not the caller's input."""


_metrics: dict[str, Any] = {}


def _counter(name: str, description: str) -> Any:
    """One Ray counter per name and process (tags: actor, and command or task)."""
    if name not in _metrics:
        tags = ("actor", "command") if "command" in name else ("actor", "task")
        _metrics[name] = metrics.Counter(name, description, tag_keys=tags)
    return _metrics[name]


def _fault(actor: str, name: str, args: tuple, exc: Exception) -> InternalError:
    incident = uuid.uuid4().hex[:12]
    logger.error(
        "actor command failed",
        exc_info=exc,
        extra={
            "actor": actor,
            "command": name,
            "command_args": _short.repr(args),
            "incident": incident,
        },
    )
    _counter("kiki_actor_command_errors", "actor commands failed by an unexpected error").inc(
        1, tags={"actor": actor, "command": name}
    )
    return InternalError(
        f"{actor}.{name} failed unexpectedly (incident {incident}, in the actor's log); "
        "the actor goes on serving"
    )


def command(actor: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Mark a method as a command of `actor`: `KikiError`s pass through as the answer; any
    other exception answers this call only, as an `InternalError`, logged with the command."""

    def wrap(method: Callable[P, T]) -> Callable[P, T]:
        name = method.__name__
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                try:
                    return await method(*args, **kwargs)  # type: ignore[misc]
                except KikiError:
                    raise
                except Exception as exc:
                    raise _fault(actor, name, args[1:], exc) from None

            return run_async  # type: ignore[return-value]

        @functools.wraps(method)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return method(*args, **kwargs)
            except KikiError:
                raise
            except Exception as exc:
                raise _fault(actor, name, args[1:], exc) from None

        return run

    return wrap


class Supervisor:
    """Keeps an actor's background tasks running: one that ends by an exception is logged,
    counted in `kiki_actor_task_restarts` and started again after a short, growing pause.
    A task that returns normally is done; `stop` cancels them all."""

    def __init__(self, actor: str, max_backoff_s: float = 5.0) -> None:
        self.actor = actor
        self.max_backoff_s = max_backoff_s
        self.restarts: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        if name in self._tasks and not self._tasks[name].done():
            return
        self.restarts.setdefault(name, 0)
        self._tasks[name] = asyncio.get_running_loop().create_task(self._keep(name, run))

    def start_every(
        self, name: str, interval_s: float, work: Callable[[], Awaitable[object]]
    ) -> None:
        """`work` every `interval_s`, the first after one interval; a round that fails is
        logged and the next one still runs on schedule."""

        async def rounds() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await work()
                except Exception:
                    logger.exception(
                        "a scheduled round failed; the next one runs on schedule",
                        extra={"actor": self.actor, "task": name},
                    )

        self.start(name, rounds)

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def _keep(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        pause = 0.05
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self.restarts[name] += 1
                logger.exception(
                    "background task died; restarting it",
                    extra={"actor": self.actor, "task": name, "restarts": self.restarts[name]},
                )
                _counter("kiki_actor_task_restarts", "background tasks restarted").inc(
                    1, tags={"actor": self.actor, "task": name}
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.max_backoff_s)

    async def stop(self, name: str | None = None) -> None:
        names = [name] if name else list(self._tasks)
        tasks = [self._tasks.pop(n) for n in names if n in self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
