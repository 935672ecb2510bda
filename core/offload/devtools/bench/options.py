"""What the closed-loop benches (``scale``, ``cache``) share on the command line."""

from __future__ import annotations

from dataclasses import dataclass

QUICK_DURATION_S = 1.0
QUICK_ROUNDS = 1


@dataclass(frozen=True)
class TimedRunOptions:
    """``--duration``, ``--rounds``, ``--json``; ``--quick`` makes it 1 s runs, one round."""

    duration_s: float = 2.0
    rounds: int = 3
    json: bool = False
    quick: bool = False

    @property
    def timing(self) -> tuple[float, int]:
        """Seconds per run and rounds, as this run uses them."""
        return (QUICK_DURATION_S, QUICK_ROUNDS) if self.quick else (self.duration_s, self.rounds)
