"""What to do with a message once every range it names has an outcome.

Pure functions: the SQS loop and the Lambda handler both ask `decide` and then act on
the answer in their own way (DeleteMessage / ChangeMessageVisibility, or
`batchItemFailures`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from replayer.model import Outcome, OutcomeKind

__all__ = ["Action", "Decision", "decide", "retry_delay"]


class Action(StrEnum):
    DELETE = "delete"  # every range replayed, or its loss durably reported
    RETRY = "retry"  # back to the queue after a growing delay
    QUARANTINE = "quarantine"  # malformed or not allowed: keep it with the reason, then delete
    LEAVE = "leave"  # malformed or not allowed, no quarantine: the queue's redrive policy decides


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""


def decide(outcomes: Sequence[Outcome], *, parse_error: str | None = None, can_quarantine: bool) -> Decision:
    """The one rule for settling a message carrying `outcomes` (one per range it names).

    A message is deleted only when every one of its ranges is settled (`Outcome.settled`:
    replayed, or lost with a durable report). Anything transient, or lost without a
    report, sends it back. Anything rejected (the message or one of its ranges) goes to
    the quarantine when there is one, and otherwise stays for the queue's redrive policy.
    """
    if parse_error is not None:
        return Decision(Action.QUARANTINE if can_quarantine else Action.LEAVE, parse_error)
    if not outcomes:
        return Decision(Action.QUARANTINE if can_quarantine else Action.LEAVE, "the message names no range")
    # A conflict is quarantined like a rejection (with both digests in its reason), never deleted silently.
    held = (OutcomeKind.REJECTED, OutcomeKind.CONFLICT)
    unsettled = [o for o in outcomes if o.kind not in held and not o.settled]
    if unsettled:
        first = unsettled[0]
        reason = first.reason or first.kind.value
        if first.kind in (OutcomeKind.PARTIAL, OutcomeKind.EXPIRED):
            reason = f"{first.kind.value} with no durable loss report ({reason})"
        return Decision(Action.RETRY, reason)
    rejected = [o for o in outcomes if o.kind in held and not o.settled]
    if rejected:
        reason = "; ".join(o.reason for o in rejected)
        return Decision(Action.QUARANTINE if can_quarantine else Action.LEAVE, reason)
    return Decision(Action.DELETE)


def retry_delay(
    receive_count: int,
    *,
    base: int,
    maximum: int,
    deadline: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Seconds to keep a retried message invisible: base * 2^(receives - 1), capped at `maximum`,
    and at half the time left before the range's earliest expiry deadline, so a retry never
    sleeps past the point where the records are gone. Past the deadline the plain growing
    delay applies: retrying at once would only burn receives toward the dead-letter queue.
    """
    exponent = min(max(receive_count, 1) - 1, 20)
    delay = min(maximum, base * (1 << exponent))
    if deadline is not None and now is not None:
        left = (deadline - now).total_seconds()
        if left > 0:
            delay = min(delay, int(left / 2))
    return max(0, min(delay, 43_200))
