"""How much dispute work an agent can do in time, measured as it works, and said out loud.

An honest agent must answer every game before its deadline, whatever a counter-party opens against it. Its
work per move is small and bounded (traces shared per claim, few live VM executors, the most urgent query
first), but not free: `Capacity` keeps the last minute of it (seconds of trace work, moves made) and states

- `load`: the share of the window spent working (1.0: saturated);
- `moves_per_timeout`: how many game moves that work rate answers within one move timeout;
- `overloaded`: load at or above `WARN_LOAD`, a trace query waiting a quarter of a move timeout, or more
  active games than moves per timeout. The agent then warns (`capacity_low`) while it still meets every
  deadline, and stops taking on new work that would add games (the node posts no new results, the watcher
  leaves games between others alone) until it recovers (`capacity_ok`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

WINDOW = 60.0  # seconds of history
WARN_LOAD = 0.8


@dataclass
class Capacity:
    move_timeout: int
    games: int = 0  # active games
    traces: int = 0  # distinct claims among them (shared traces)
    oldest_wait: float = 0.0  # seconds the oldest unanswered trace query has been waiting
    _work: deque[tuple[float, float, int]] = field(default_factory=deque)  # (when, seconds, moves)

    def record(self, seconds: float, moves: int) -> None:
        """A tick's dispute work: seconds spent computing for games and the game moves it led to."""
        now = time.monotonic()
        self._work.append((now, seconds, moves))
        while self._work and self._work[0][0] < now - WINDOW:
            self._work.popleft()

    @property
    def load(self) -> float:
        return min(1.0, sum(s for _, s, _ in self._work) / WINDOW)

    @property
    def moves_per_timeout(self) -> int | None:
        """Game moves answerable per move timeout at the measured rate (None before any measurement)."""
        seconds = sum(s for _, s, _ in self._work)
        moves = sum(m for _, _, m in self._work)
        if moves == 0:
            return None
        return int(self.move_timeout * moves / max(seconds, 1e-6))

    @property
    def overloaded(self) -> bool:
        per_timeout = self.moves_per_timeout
        return (
            self.load >= WARN_LOAD
            or self.oldest_wait >= self.move_timeout / 4
            or (per_timeout is not None and self.games > per_timeout)
        )

    def report(self) -> dict[str, object]:
        """The figures an operator sees (log lines, status)."""
        return {
            "games": self.games,
            "traces": self.traces,
            "load": round(self.load, 3),
            "moves_per_timeout": self.moves_per_timeout,
            "oldest_wait_s": round(self.oldest_wait, 1),
            "overloaded": self.overloaded,
        }
