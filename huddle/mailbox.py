"""One app's mailbox: the queue its state machine reads, its named timers, its one git task.

Everything that happens to an app is posted here and read one at a time, so the machine
needs no lock. A timer posts a `Deadline` carrying a token; re-arming or disarming bumps the
token, so a deadline already in the queue when its timer was re-armed is recognised as stale
and dropped (`fresh`). At most one git/hook task runs per app (`start_work`): its result, or
the event its failure maps to, is posted like any other event, and a bug in it becomes an
error event instead of a silent end that would leave the app waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from huddle.errors import HuddleError
from huddle.events import Deadline

log = logging.getLogger("huddle.app")

Event = Any  # one of huddle.events' records


class Mailbox:
    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tokens: dict[str, int] = {}
        self.work: asyncio.Task[None] | None = None

    def post(self, event: Event) -> None:
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()

    # -- timers -------------------------------------------------------------------------------
    def arm(self, kind: str, delay_s: float) -> None:
        """(Re)start the timer `kind`; when it fires, a Deadline event is posted."""
        self.disarm(kind)
        token = self.tokens[kind]
        self.timers[kind] = asyncio.get_running_loop().call_later(
            max(0.0, delay_s), self.post, Deadline(kind, token)
        )

    def disarm(self, kind: str) -> None:
        handle = self.timers.pop(kind, None)
        if handle is not None:
            handle.cancel()
        self.tokens[kind] = self.tokens.get(kind, 0) + 1  # a Deadline already queued is stale

    def due_in(self, kind: str) -> float:
        handle = self.timers.get(kind)
        return math.inf if handle is None else handle.when() - asyncio.get_running_loop().time()

    def fresh(self, deadline: Deadline) -> bool:
        """Whether a Deadline is the current one of its timer (and consume the timer)."""
        if self.tokens.get(deadline.kind) != deadline.token:
            return False
        self.timers.pop(deadline.kind, None)
        return True

    # -- the one git/hook task --------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.work is not None

    def start_work(
        self, work: Coroutine[Any, Any, Event], failed: Callable[[HuddleError | OSError], Event]
    ) -> None:
        """Run one git/hook task; its result (or `failed(error)`) comes back as an event.
        The machine calls `work_done` when it reads that event."""
        if self.work is not None:
            work.close()
            raise RuntimeError(f"{self.name}: a second git task while one runs")

        async def run() -> None:
            try:
                event = await work
            except (HuddleError, OSError) as exc:
                event = failed(exc)
            except Exception as exc:  # a bug must not leave the app without a way forward
                log.exception("%s: internal error in a git/hook task", self.name)
                event = failed(HuddleError(f"internal error: {exc!r}"))
            self.post(event)

        self.work = asyncio.ensure_future(run())

    def work_done(self) -> None:
        self.work = None

    async def close(self) -> None:
        """Stop every timer and cancel the task under way (its git child is killed)."""
        for kind in list(self.timers):
            self.disarm(kind)
        if self.work is not None:
            self.work.cancel()
            await asyncio.gather(self.work, return_exceptions=True)
            self.work = None
