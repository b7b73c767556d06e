"""Capped, jittered exponential backoff, shared by polling, restarts and reconnects.

Every retry in huddle goes through one of these: the delay doubles per consecutive failure up
to a cap, and is jittered (uniformly between half and all of it) so a fleet that lost its git
server at the same moment does not come back in lock-step. `reset()` on success.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s = base_s
        self.cap_s = max(cap_s, base_s)
        self.failures = 0
        self.rng = rng or random.Random()

    def failed(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        self.failures += 1
        return self.peek()

    def peek(self) -> float:
        if self.failures == 0:
            return 0.0
        full = min(self.cap_s, self.base_s * (2 ** min(self.failures - 1, 30)))
        return self.rng.uniform(full / 2, full)

    def reset(self) -> None:
        self.failures = 0
