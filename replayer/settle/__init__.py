"""Settling a message once every range it names has an outcome: the one rule, and acting on it.

`decide` is the rule (delete / retry / quarantine / leave); `retry_delay` how long a
retried message stays away; `Settler` performs the decision for the SQS service, the
Lambda runtime and the CLI's drain alike: it quarantines (falling back to a retry when
the quarantine cannot take the message), deletes or delays the SQS message (ten messages
to a call: `settle.batch`), and logs and counts what happened under one literal name per
action.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from replayer import logs
from replayer.aws import SqsQueue
from replayer.core import OUT_OF_TIME
from replayer.model import Outcome, OutcomeKind
from replayer.observe import Recorder
from replayer.parse import Message
from replayer.settle.batch import Batches, EntryFailed
from replayer.settle.quarantine import Quarantine, QuarantineError

if TYPE_CHECKING:
    from replayer.config import Settings

__all__ = ["Action", "Decision", "Settler", "decide", "retry_delay"]

log = logs.get_logger("replayer.settle")

_AWS_TROUBLE = (ClientError, BotoCoreError, OSError, TimeoutError, EntryFailed)
_SQS_MAX_VISIBILITY = 43_200


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
    receive_count: int, *, base: int, maximum: int, deadline: float = math.inf, now: float | None = None
) -> int:
    """Seconds to keep a retried message invisible: base * 2^(receives - 1), capped at `maximum`,
    and at half the time left before the range's earliest expiry `deadline` (epoch seconds,
    +inf when unknown), so a retry never sleeps past the point where the records are gone.
    Past the deadline the plain growing delay applies: retrying at once would only burn
    receives toward the dead-letter queue.
    """
    exponent = min(max(receive_count, 1) - 1, 20)
    delay = min(maximum, base * (1 << exponent))
    if math.isfinite(deadline):
        left = deadline - (time.time() if now is None else now)
        if left > 0:
            delay = min(delay, int(left / 2))
    return max(0, min(delay, _SQS_MAX_VISIBILITY))


class Settler:
    """Performs `decide`'s answer for one message, and logs and counts it.

    `deletes`: whether this process deletes settled SQS messages itself (the service)
    or leaves that to its caller (Lambda deletes every message not reported failed).
    """

    def __init__(
        self,
        *,
        recorder: Recorder,
        quarantine: Quarantine | None,
        retry_base_seconds: int,
        retry_max_seconds: int,
        deletes: bool,
    ) -> None:
        self.recorder = recorder
        self.quarantine = quarantine
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.deletes = deletes
        self._batches: dict[str, Batches] = {}  # by queue URL: the service settles one queue's messages

    @classmethod
    def of(
        cls, settings: Settings, *, recorder: Recorder, quarantine: Quarantine | None, deletes: bool
    ) -> Settler:
        """The settler a command's settings give (its retry delays), for every source alike."""
        return cls(
            recorder=recorder,
            quarantine=quarantine,
            retry_base_seconds=settings.retry_base_seconds,
            retry_max_seconds=settings.retry_max_seconds,
            deletes=deletes,
        )

    def _batched(self, queue: SqsQueue) -> Batches:
        batches = self._batches.get(queue.url)
        if batches is None or batches.queue is not queue:
            batches = self._batches[queue.url] = Batches(queue)
        return batches

    async def settle(
        self,
        message: Message,
        outcomes: Sequence[Outcome],
        *,
        queue: SqsQueue | None = None,
        deadline: float = math.inf,
        source: str = "",
    ) -> Decision:
        """Decide and act for `message` (its ranges' `outcomes`, in order); what was done, and why.

        `queue` is the SQS queue the message came from (None: not an SQS message), and
        `deadline` the earliest expiry deadline among its ranges (epoch seconds).
        """
        with logs.bound(message_id=message.id):
            decision = decide(
                outcomes, parse_error=message.parse_error, can_quarantine=self.quarantine is not None
            )
            if decision.action is Action.QUARANTINE:
                decision = await self._quarantine(message, decision, source or (queue.url if queue else ""))
            if decision.action in (Action.DELETE, Action.QUARANTINE):
                await self._delete(message, queue, decision.action, ranges=len(outcomes))
            else:
                await self._delay(message, decision, queue, deadline)
            return decision

    async def _quarantine(self, message: Message, decision: Decision, source: str) -> Decision:
        assert self.quarantine is not None
        try:
            where = await self.quarantine.put(message.body, decision.reason, message.id, source)
        except QuarantineError as exc:
            log.error("quarantine_failed", error=str(exc), reason=decision.reason)
            return Decision(Action.RETRY, f"quarantine failed: {exc}")
        log.warning("message_quarantined", reason=decision.reason, quarantine=where)
        self.recorder.message("quarantined")
        return decision

    async def _delete(self, message: Message, queue: SqsQueue | None, action: Action, *, ranges: int) -> None:
        if not self.deletes or queue is None or message.receipt is None:
            if action is Action.DELETE:  # the caller deletes it (Lambda: not reported as failed)
                self.recorder.message("deleted")
            return
        try:
            await self._batched(queue).delete(message.receipt)
        except _AWS_TROUBLE as exc:  # it will come back, and its ranges are already archived
            log.error("delete_failed", error=str(exc))
            return
        self.recorder.message("deleted")
        log.info("message_deleted", ranges=ranges)

    async def _delay(
        self, message: Message, decision: Decision, queue: SqsQueue | None, deadline: float
    ) -> None:
        """A growing delay before the message is seen again (none when it was not even started)."""
        delay = retry_delay(
            message.receive_count,
            base=self.retry_base_seconds,
            maximum=self.retry_max_seconds,
            deadline=deadline,
        )
        if decision.action is Action.RETRY:
            log.warning(
                "message_retried",
                reason=decision.reason,
                visible_in=delay,
                receive_count=message.receive_count,
            )
            self.recorder.message("retried")
        else:
            log.warning(
                "message_left", reason=decision.reason, visible_in=delay, receive_count=message.receive_count
            )
            self.recorder.message("left")
        if queue is None or message.receipt is None or decision.reason == OUT_OF_TIME:
            return
        try:  # under the queue's visibility lock, as every visibility change (settle.batch)
            await self._batched(queue).change_visibility(message.receipt, delay)
        except _AWS_TROUBLE as exc:  # it comes back when its current visibility lapses anyway
            log.warning("change_visibility_failed", error=str(exc))
