"""Reconnect delays of a source: exponential backoff with full jitter.

A source's decode thread asks :class:`Backoff` how long to wait before the
next connection attempt after a camera went away or could not be opened.
Delays are drawn uniformly from ``[0, cap]`` where ``cap`` starts at
``initial_s`` and doubles per attempt up to ``max_s`` ("full jitter", as in
the AWS architecture blog's comparison of backoff schemes): many boxes that
lost the same camera, or one box that lost several cameras behind one switch,
do not reconnect in lockstep. After a connection has been healthy for
``healthy_s`` the source calls :meth:`Backoff.reset`, so the next outage
starts again with short delays.
"""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter.

    Parameters
    ----------
    initial_s : float
        Upper bound of the first delay, seconds (> 0).
    max_s : float
        Largest upper bound, seconds (>= ``initial_s``; smaller values are
        raised to ``initial_s``).
    healthy_s : float
        Seconds a connection must run before :meth:`note_running` resets
        the attempts (>= 0).
    rng : random.Random, optional
        Source of jitter; pass a seeded one for reproducible tests.

    Raises
    ------
    ValueError
        If ``initial_s`` is not positive or ``healthy_s`` is negative.
    """

    def __init__(self, initial_s: float, max_s: float, healthy_s: float = 10.0,
                 rng: random.Random | None = None) -> None:
        if not initial_s > 0:
            raise ValueError(f"initial_s must be > 0 seconds, got {initial_s}")
        if healthy_s < 0:
            raise ValueError(f"healthy_s must be >= 0 seconds, got {healthy_s}")
        self.initial_s = float(initial_s)
        self.max_s = max(float(max_s), self.initial_s)
        self.healthy_s = float(healthy_s)
        self._rng = rng if rng is not None else random.Random()  # jitter, not crypto
        self._cap = self.initial_s
        self.attempts = 0

    @property
    def cap_s(self) -> float:
        """Upper bound of the next delay, seconds."""
        return self._cap

    def next_delay(self) -> float:
        """Draw the delay before the next attempt and double the bound (capped).

        Returns
        -------
        float
            Seconds to wait, uniform in ``[0, cap_s]`` as it was before the call.
        """
        delay = self._rng.uniform(0.0, self._cap)
        # Doubling a bound (not computing initial * 2**attempts) never overflows,
        # however long a camera stays away.
        self._cap = min(self._cap * 2.0, self.max_s)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a healthy connection)."""
        self._cap = self.initial_s
        self.attempts = 0

    def note_running(self, running_for_s: float) -> bool:
        """Reset if a connection has run for at least ``healthy_s``.

        Parameters
        ----------
        running_for_s : float
            Seconds since the current connection delivered its first frame.

        Returns
        -------
        bool
            True if this call reset the backoff.
        """
        if self.attempts and running_for_s >= self.healthy_s:
            self.reset()
            return True
        return False
