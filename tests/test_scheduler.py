"""The one scheduler (`replayer.core.Scheduler`): pure asyncio, no AWS involved."""

from __future__ import annotations

import asyncio
import math

from replayer.core import OUT_OF_TIME, Scheduler
from replayer.model import Outcome, OutcomeKind


def make(
    work: object, *, concurrency: int = 2, deadlines: dict[str, float] | None = None, **kw: object
) -> Scheduler[str]:
    async def deadline(item: str) -> float:
        return (deadlines or {}).get(item, math.inf)

    return Scheduler(
        work,  # type: ignore[arg-type]
        key=lambda item: item.split("#")[0],
        failure_of=lambda item: None,
        concurrency=concurrency,
        deadline=deadline,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_key_named_twice_is_worked_once_and_both_get_its_outcome() -> None:
    calls: list[str] = []

    async def work(item: str) -> Outcome:
        calls.append(item)
        return Outcome(OutcomeKind.REPLAYED, None, reason=item)

    tickets = await make(work).run(["a#1", "b", "a#2"])
    assert sorted(calls) == ["a#1", "b"]
    assert tickets[0] is tickets[2] and tickets[2].result() == Outcome(
        OutcomeKind.REPLAYED, None, reason="a#1"
    )


async def test_earliest_deadline_first_with_bounded_concurrency() -> None:
    order: list[str] = []
    running = peak = 0

    async def work(item: str) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        order.append(item)
        await asyncio.sleep(0.01)
        running -= 1
        return Outcome(OutcomeKind.REPLAYED, None)

    deadlines = {"late": 300.0, "soon": 100.0, "mid": 200.0, "never": math.inf}
    scheduler = make(work, concurrency=1, deadlines=deadlines)
    await scheduler.run(["late", "never", "soon", "mid"])
    assert order == ["soon", "mid", "late", "never"] and peak == 1


async def test_one_lane_runs_one_at_a_time_in_submission_order() -> None:
    order: list[str] = []
    running: dict[str, int] = {}

    async def work(item: str) -> Outcome:
        lane = item[0]
        running[lane] = running.get(lane, 0) + 1
        assert running[lane] == 1, "two items of one lane at once"
        order.append(item)
        await asyncio.sleep(0.01)
        running[lane] -= 1
        return Outcome(OutcomeKind.REPLAYED, None)

    await make(work, concurrency=4, lane=lambda item: item[0]).run(["x1", "x2", "y1", "x3", "y2"])
    assert [i for i in order if i[0] == "x"] == ["x1", "x2", "x3"]
    assert [i for i in order if i[0] == "y"] == ["y1", "y2"]


async def test_the_crash_guard_turns_an_exception_into_a_retry() -> None:
    async def work(item: str) -> Outcome:
        raise RuntimeError("a bug")

    (ticket,) = await make(work).run(["a"])
    outcome = ticket.result()
    assert outcome is not None and outcome.kind is OutcomeKind.RETRY
    assert "unexpected error: RuntimeError: a bug" in outcome.reason


async def test_nothing_starts_once_the_may_start_budget_says_no() -> None:
    started: list[str] = []

    async def work(item: str) -> Outcome:
        started.append(item)
        return Outcome(OutcomeKind.REPLAYED, None)

    tickets = await make(work, may_start=lambda: not started).run(["a", "b", "c"])
    assert len(started) == 1
    reasons = sorted(t.result().reason for t in tickets if t.result() is not None)  # type: ignore[union-attr]
    assert reasons == ["", OUT_OF_TIME, OUT_OF_TIME]


async def test_a_refused_item_is_settled_without_a_worker_and_what_is_cut_holds_no_outcome() -> None:
    async def work(item: str) -> Outcome:
        await asyncio.Event().wait()  # never ends
        raise AssertionError

    refused = Outcome(OutcomeKind.REJECTED, None, reason="not allowed")
    scheduler = make(work, refuse=lambda item: refused if item == "no" else None)
    no, hang = await scheduler.run(["no", "hang"], within=0.2)
    assert no.result() is refused
    assert hang.result() is None  # cut: the caller treats it as not done
