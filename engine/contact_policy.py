"""One contact policy for every campaign and channel: caps, quiet hours, consent, unsubscribe, back-off.

The models are configuration (`Settings.contact.policy`); the checks that need no shared state are pure
functions here, and the caps and back-off, which need atomic counting across workers, live in `engine.limits`.
"""

from __future__ import annotations

from datetime import time

from pydantic import BaseModel, ConfigDict, Field

from graph.model import ContactChannel


class Cap(BaseModel):
    """At most `limit` messages in any window of `window_days` (a sliding window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=0, le=10_000)
    window_days: float = Field(gt=0, le=3660)


class ContactPolicy(BaseModel):
    """The defaults: at most 1 marketing message in 7 days and 3 in 30 across channels, none at night."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caps: tuple[Cap, ...] = (Cap(limit=1, window_days=7), Cap(limit=3, window_days=30))
    """Marketing messages and invitations, all channels together."""
    channel_caps: dict[ContactChannel, tuple[Cap, ...]] = Field(default_factory=dict)
    """Tighter caps for one channel (e.g. SMS: 1 in 30 days)."""
    transactional_caps: tuple[Cap, ...] = (Cap(limit=10, window_days=1),)
    """Reward notices are exempt from the marketing caps, under their own."""
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    """Quiet hours in the person's own time zone; start after end means overnight."""
    backoff_after_ignored: int = Field(default=2, ge=1, le=100)
    """After this many marketing messages with no response in between, wait longer before the next one."""
    backoff_base_days: float = Field(default=14.0, gt=0, le=3660)
    backoff_factor: float = Field(default=2.0, ge=1, le=100)
