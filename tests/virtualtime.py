"""An asyncio loop whose clock is virtual: when nothing is ready, time jumps to the next timer.

Unit tests of the controllers run hours of polls, backoffs and health windows in
milliseconds, and deterministically. Only fakes may run on it: a real child process or
socket would need real time to pass. A loop with nothing scheduled and nothing ready raises
instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self, clock: VirtualTimeLoop) -> None:
        self._real = selectors.DefaultSelector()
        self._loop = clock

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def get_map(self):
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout=None):
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time deadlock: nothing scheduled, nothing ready")
        self._loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(coro):
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
