"""One error hierarchy for every layer.

Stores wrap driver exceptions in these, the CLI prints them as one clear line, and the API maps each class to
an RFC 9457 problem-details response, so no caller ever has to know which backend failed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RowError:
    """What is wrong with one input row: where it is and why, so a user can fix the file."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where}: {self.reason}"


class AdvocacyError(Exception):
    """Base of every error the engine raises on purpose."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(AdvocacyError):
    status = 404
    title = "Not found"


class InvalidInput(AdvocacyError):
    """Input that cannot be accepted; `problems` lists row-level errors when there are several."""

    status = 422
    title = "Invalid input"

    def __init__(self, detail: str, problems: list[RowError] | None = None) -> None:
        super().__init__(detail)
        self.problems: list[RowError] = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.detail
        shown = "\n".join(f"  {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        return f"{self.detail}\n{shown}{more}"


class Unauthorized(AdvocacyError):
    """Missing, expired or forged credentials or signatures."""

    status = 401
    title = "Unauthorized"


class Forbidden(AdvocacyError):
    """Valid credentials that do not allow this action."""

    status = 403
    title = "Forbidden"


class PolicyViolation(AdvocacyError):
    status = 409
    title = "Refused by policy"


class LedgerConflict(AdvocacyError):
    status = 409
    title = "Ledger conflict"


class StoreUnavailable(AdvocacyError):
    """The store (Neo4j, SQLite file, Redis) cannot be reached; callers may retry later."""

    status = 503
    title = "Service unavailable"
    retry_after_s: int = 5

    def __init__(self, detail: str, *, public: str | None = None) -> None:
        super().__init__(detail)
        self.public = public or "a service this request needs is not answering; retry after the Retry-After delay"
        """What a client is told: `detail` names hosts and driver errors, which are for logs and `/readyz`."""


class TooManyRequests(AdvocacyError):
    """A caller went over its request rate; `retry_after_s` says when the window lets it in again."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
