"""The overhead controller: keeps capture within a fraction of the training step time.

Every piece of capture code is timed (``time.perf_counter``) and charged here, either to the
always-on per-step path or to one firing of an activity (``"snapshot"``, ``"telemetry"``,
``"activations"``). The step time is the wall time between step boundaries (optimizer
post-hooks), minus the capture time charged in between. From these the controller derives, for
each activity, the smallest gap in steps between firings that keeps its average cost within its
share of the budget; the schedule never fires an activity more often than its minimum interval
(the user's ``every`` for snapshots). With ``budget=None`` every gap is 0: the schedule is fixed.

Budget split: the always-on path is paid first; the rest is shared between activities in
proportion to ``shares``, and an activity that needs less than its share at its minimum
interval gives the remainder to the others (water filling). An activity whose cost is not
measured yet takes no share and runs at its minimum interval.

The budget holds on the run's total: what capture spent beyond it so far (a first firing's
warm-up, firings the minimum cadence forced) is a debt, paid back from the activities' grants
over as many steps as the run has taken, so that the mean comes back to the budget.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

#: Share of the budget per activity: snapshots, what the dashboard is for, get the most.
DEFAULT_SHARES: Mapping[str, float] = {"snapshot": 0.6, "telemetry": 0.2, "activations": 0.2}
#: Longest gap ever chosen, so that an activity never disappears for good.
MAX_GAP = 1_000_000
#: Gaps are recomputed at the boundary after a new cost measurement, or at the first boundary
#: at least this many steps after the last recomputation.
RECOMPUTE_EVERY = 64
#: The run length over which the minimum cadence guarantees a short run's figures (issue 16:
#: at least 6 maps and telemetry on at least half of the steps of a 300-step run).
FLOOR_RUN_STEPS = 300
#: Longest gap the budget may choose per activity, as ``(steps, fraction, power)``: the larger
#: of ``steps`` and ``fraction * last ** power``, ``last`` being the step the activity last
#: fired at. Every floor grows with the step, so that a long run's mean overhead converges to
#: the budget: snapshots and activation statistics at least once per quarter of the steps
#: taken (their floor's firings grow as the log of a run's length); telemetry at least every
#: 2 steps until step FLOOR_RUN_STEPS, then ever further apart, 2 * (last / FLOOR_RUN_STEPS)
#: ** 2 steps (22 at step 1,000, 200 at step 3,000): its floor fires at most about
#: FLOOR_RUN_STEPS times in all, however long the run.
CADENCE_FLOOR: Mapping[str, tuple[float, float, float]] = {
    "snapshot": (0.0, 0.25, 1.0), "telemetry": (2.0, 2.0 / FLOOR_RUN_STEPS ** 2, 2.0),
    "activations": (0.0, 0.25, 1.0)}
#: Fewest probe samples a spread snapshot covers when the budget cannot pay for the whole probe
#: at the minimum cadence (see :mod:`sentrycam.capture.pacing`): about 20 per class for 10
#: classes. A smaller probe is used whole.
MIN_MAP_SAMPLES = 200
COST_SMOOTHING = 0.3
STEP_SMOOTHING = 0.1
#: The always-on cost comes in lumps (a batch of messages every so many steps): its estimate
#: remembers about 1 / FIXED_SMOOTHING steps.
FIXED_SMOOTHING = 0.01


def positive_int(value: Any) -> bool:
    """True for an int > 0 (bools excluded)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def check_schedule(every: Any, budget: Any, stats_every: Any, default_every: int) -> int | str:
    """ValueError for a bad ``every``, ``overhead_budget`` or ``stats_every``; returns ``every``
    (``default_every`` when None)."""
    every = default_every if every is None else every
    if every != "epoch" and not positive_int(every):
        raise ValueError(f"every must be a positive number of optimizer steps or 'epoch', "
                         f"got {every!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Real)
                               or not 0 < budget <= 1):
        raise ValueError(f"overhead_budget must be a fraction in (0, 1], e.g. 0.01 for 1% of "
                         f"the step time, or None for a fixed schedule; got {budget!r}")
    if not positive_int(stats_every):
        raise ValueError(f"stats_every must be a positive integer, got {stats_every!r}")
    return every


def allocate(demands: Mapping[str, float], shares: Mapping[str, float],
             available: float) -> dict[str, float]:
    """Seconds per step granted to each activity: its demand if its fair share covers it, else
    its share of what the satisfied activities left over."""
    granted: dict[str, float] = {}
    pending, remaining = set(demands), available
    while pending:
        total = sum(shares[a] for a in pending)
        fair = {a: remaining * shares[a] / total for a in pending}
        met = [a for a in pending if demands[a] <= fair[a]]
        if not met:
            granted.update(fair)
            break
        for activity in met:
            granted[activity] = demands[activity]
            remaining -= demands[activity]
            pending.discard(activity)
    return granted


def floor_gap(activity: str, last: int) -> float:
    """The longest gap the budget may put after a firing of ``activity`` at step ``last``."""
    steps, fraction, power = CADENCE_FLOOR.get(activity, (MAX_GAP, 0.0, 1.0))
    return max(steps, fraction * last ** power)


def next_due(last: int, every: int, gap: float, floor: float = MAX_GAP) -> int:
    """The first multiple of ``every`` at least ``max(every, min(gap, floor))`` steps after
    ``last``."""
    wait = max(every, math.ceil(min(gap, floor, MAX_GAP)))
    return -(-(last + wait) // every) * every


class OverheadController:
    """Measures capture cost against step time and says how far apart activities must be.

    Step time and the always-on cost are smoothed estimates over periods of at least
    ``RECOMPUTE_EVERY`` steps (or shorter, right after an activity reported a new cost), from
    running totals of wall time and charged capture time; a boundary between two
    recomputations is a counter and a comparison, and quiet steps may skip it altogether
    (see :meth:`step_boundary`).
    """

    def __init__(self, budget: float | None, min_intervals: Mapping[str, float],
                 shares: Mapping[str, float] = DEFAULT_SHARES) -> None:
        self.budget = budget
        self.min_intervals = dict(min_intervals)
        self.shares = dict(shares)
        self.cost: dict[str, float] = {}  # smoothed seconds per firing
        self.step_time: float | None = None  # smoothed training seconds per step, capture excluded
        self.fixed_cost = 0.0  # smoothed always-on capture seconds per step
        self._fixed_measured = False  # a period of RECOMPUTE_EVERY steps went into fixed_cost
        self._gaps = {activity: 0.0 for activity in self.shares}
        self._granted: dict[str, float] = {}  # seconds per step, at the last recomputation
        self._capture = 0.0  # every capture second charged so far
        self._fixed = 0.0  # the always-on part of it
        self._steps = 0  # step boundaries seen
        self._first: tuple[float, float] | None = None  # (time, capture total) at boundary 1
        self._first_steps = 0  # boundaries counted by then
        self._last: tuple[float, float] = (0.0, 0.0)  # the same at the latest boundary
        self._period: tuple[float, float, float, int] | None = None  # start of the open period
        self._warmed: set[str] = set()  # activities whose warm-up firing is behind them
        self._dirty = False

    def charge(self, activity: str | None, seconds: float) -> None:
        """Record capture time spent now: one firing of ``activity``, or always-on work when
        None (:meth:`spend`, then :meth:`record` for an activity)."""
        self.spend(seconds)
        if activity is None:
            self._fixed += seconds
        else:
            self.record(activity, seconds)

    def spend(self, seconds: float) -> None:
        """Count ``seconds`` of capture time spent now, in the overhead (part of a firing whose
        cost :meth:`record` learns when it is complete, a spread snapshot's slice say)."""
        self._capture += seconds

    def record(self, activity: str, seconds: float) -> None:
        """Learn the cost of one complete firing of ``activity`` (its seconds were spent).

        The first firing of an activity counts as overhead but not as its cost: it pays
        one-time warm-up (kernel selection, first allocations) that can be many times the
        steady cost, and would stretch the interval far beyond need. Until a second firing is
        measured, the activity keeps its minimum interval.
        """
        if activity not in self._warmed:
            self._warmed.add(activity)
            return
        previous = self.cost.get(activity)
        self.cost[activity] = (seconds if previous is None
                               else previous + COST_SMOOTHING * (seconds - previous))
        self._dirty = True

    def step_boundary(self, now: float, steps: int = 1, fixed: float = 0.0) -> bool:
        """Count ``steps`` step boundaries, the latest at ``now`` (the start of an optimizer
        post-hook); True when the gaps were recomputed.

        A caller may skip the boundaries of quiet steps (only the always-on path ran, nothing was
        charged) and report them with the next one: ``steps`` counts them all, ``fixed`` is the
        always-on seconds they spent. Only totals between boundaries are used, so this gives the
        same estimates as calling every step, updated at the reported boundaries only.
        """
        self._capture += fixed
        self._fixed += fixed
        self._steps += steps
        self._last = (now, self._capture)
        period = self._period
        if period is None:
            self._first, self._first_steps = self._last, self._steps
            self._period = (now, self._capture, self._fixed, self._steps)
            return False
        steps = self._steps - period[3]
        if steps < RECOMPUTE_EVERY and not self._dirty:
            return False
        wall = now - period[0]
        train = (wall - (self._capture - period[1])) / steps
        if train > 0:
            weight = 1.0 - (1.0 - STEP_SMOOTHING) ** steps
            self.step_time = train if self.step_time is None else (
                self.step_time + weight * (train - self.step_time))
        # Periods vary from one step (right after an activity reported a cost) to many: each
        # counts by its number of steps, so that one short period cannot swing the estimate.
        fixed = (self._fixed - period[2]) / steps
        if self._fixed_measured:
            weight = 1.0 - (1.0 - FIXED_SMOOTHING) ** steps
            self.fixed_cost += weight * (fixed - self.fixed_cost)
        else:  # until a full-length period was measured, the latest period is the estimate
            self.fixed_cost = fixed
            self._fixed_measured = steps >= RECOMPUTE_EVERY
        self._period = (now, self._capture, self._fixed, self._steps)
        return self._recompute()

    @property
    def recompute_pending(self) -> bool:
        """True when the next step boundary will recompute the gaps (a new cost was measured)."""
        return self._dirty

    def set_min_interval(self, activity: str, steps: float) -> None:
        """Change an activity's minimum interval in steps (epoch-based snapshots learn theirs)."""
        self.min_intervals[activity] = max(float(steps), 1.0)
        self._dirty = True

    @property
    def step_estimate(self) -> float | None:
        """Training seconds per step, capture excluded: the smoothed estimate, or before the
        first recomputation the average since the first boundary (None before two)."""
        if self.step_time or self._first is None or self._steps <= self._first_steps:
            return self.step_time
        wall, capture = self._last[0] - self._first[0], self._last[1] - self._first[1]
        return max(wall - capture, 0.0) / (self._steps - self._first_steps) or None

    def allowance(self, activity: str) -> float | None:
        """Capture seconds per step the budget grants ``activity``: its grant at the last
        recomputation, or before its cost is measured its share of the budget left by the
        always-on path; None without a budget or a step time."""
        if self.budget is None:
            return None
        if activity in self._granted:
            return self._granted[activity]
        step = self.step_estimate
        if step is None:
            return None
        share = self.shares[activity] / sum(self.shares.values())
        return max(self.budget * step - self.fixed_cost, 0.0) * share

    def gap(self, activity: str) -> float:
        """Fewest steps between two firings of ``activity`` that fit its budget (0: no limit)."""
        return self._gaps[activity]

    @property
    def overhead(self) -> float:
        """Measured fraction of wall time spent in capture, between the first and the latest
        step boundary."""
        if self._first is None or self._last[0] <= self._first[0]:
            return 0.0
        return (self._last[1] - self._first[1]) / (self._last[0] - self._first[0])

    @property
    def debt(self) -> float:
        """Capture seconds spent beyond the budget since the first step boundary (0 when within
        it): what the grants still have to pay back."""
        if self.budget is None or self._first is None:
            return 0.0
        wall, capture = self._last[0] - self._first[0], self._last[1] - self._first[1]
        return max(capture - self.budget * wall, 0.0)

    @property
    def over_budget(self) -> bool:
        """True when the measured overhead exceeds the budget (the minimum cadence costs more
        than the budget on this model, or a warm-up firing is not paid off yet)."""
        return self.budget is not None and self.overhead > self.budget

    def _recompute(self) -> bool:
        if self.budget is None:
            self._dirty = False  # a fixed schedule: nothing to recompute
            return False
        if not self.step_time:
            return False  # stays dirty: retried at the next boundary
        self._dirty = False
        allowed = self.budget * self.step_time
        # When the always-on path and the debt take the whole budget, activities still get a
        # sliver, so that they become rare rather than disappear.
        repay = self.debt / max(self._steps - self._first_steps, RECOMPUTE_EVERY)
        available = max(allowed - self.fixed_cost - repay, 1e-3 * allowed)
        demands = {a: cost / self.min_intervals.get(a, 1.0) for a, cost in self.cost.items()}
        self._granted = allocate(demands, self.shares, available)
        for activity, seconds in self._granted.items():
            gap = self.cost[activity] / seconds if seconds > 0 else MAX_GAP
            self._gaps[activity] = min(gap, MAX_GAP)
        return True


class Schedule:
    """When each activity fires next: never more often than its minimum interval (``every``,
    in steps), and at least :meth:`OverheadController.gap` steps apart, but with
    ``minimum_cadence`` never further apart than its :data:`CADENCE_FLOOR` gap. ``next`` holds
    the step of each activity's next firing, so that the per-step check is one comparison."""

    def __init__(self, controller: OverheadController, every: Mapping[str, int],
                 minimum_cadence: bool = True) -> None:
        self.controller = controller
        self.every = dict(every)
        #: the budget may stretch an activity no further than its :data:`CADENCE_FLOOR` gap
        self.minimum_cadence = minimum_cadence
        self.last: dict[str, int | None] = {activity: None for activity in every}
        self.next: dict[str, int] = {activity: 0 for activity in every}

    def due(self, activity: str, step: int) -> bool:
        return step >= self.next[activity]

    def fired(self, activity: str, step: int) -> None:
        self.last[activity] = step
        self.next[activity] = self._after(activity, step)

    def refresh(self) -> None:
        """Recompute the next firings after the controller changed its gaps."""
        for activity, last in self.last.items():
            if last is not None:
                self.next[activity] = self._after(activity, last)

    def interval(self, activity: str) -> int:
        """The current distance in steps between two firings of ``activity`` (from its latest
        firing; the minimum cadence lets it grow with the steps taken)."""
        last = self.last.get(activity) or 0
        return self._after(activity, last) - last

    def stretched(self, activity: str) -> bool:
        """True when the budget holds ``activity`` further apart than its minimum interval."""
        return self.interval(activity) > self.every[activity]

    def _after(self, activity: str, last: int) -> int:
        return next_due(last, self.every[activity], self.controller.gap(activity),
                        floor_gap(activity, last) if self.minimum_cadence else MAX_GAP)


def floor_text() -> str:
    """:data:`CADENCE_FLOOR` in words: "a snapshot at least once per 25% of the steps taken,
    telemetry at least every 2 steps up to step 300, then ever further apart"."""
    return (f"a snapshot at least once per {CADENCE_FLOOR['snapshot'][1]:.0%} of the steps "
            f"taken, telemetry at least every {CADENCE_FLOOR['telemetry'][0]:g} steps up to "
            f"step {FLOOR_RUN_STEPS}, then ever further apart")


def cadence_text(schedule: Schedule) -> str:
    """What bounds the budget's spacing, in words: the minimum cadence, or its absence."""
    if schedule.minimum_cadence:
        return f"the minimum cadence: {floor_text()}"
    return "no minimum cadence: attach(minimum_cadence=False)"


def cadence_notices(schedule: Schedule, ending: bool,
                    reduced: tuple[int, int] | None = None) -> list[tuple[str, str, str]]:
    """``(key, event, message)`` triples telling the user how the budget shaped the schedule,
    each saying how to change it: ``"budget_stretched"`` while the budget holds snapshots or
    telemetry further apart than asked; ``"probe_reduced"`` once snapshots covered only
    ``reduced`` = ``(samples, probe size)``; at the end of a run (``ending``) ``"over_budget"``
    when the minimum cadence cost more than the budget. ``key`` changes only when the notice
    says something new (another activity stretched), not when an interval grows."""
    controller = schedule.controller
    if controller.budget is None:
        return []
    budget = f"{controller.budget * 100:g}%"
    notices = []
    apart = {activity: schedule.interval(activity) for activity in ("snapshot", "telemetry")
             if activity in schedule.every and schedule.stretched(activity)}
    if apart:
        spacing = " and ".join(f"{activity} every {steps} steps"
                               for activity, steps in apart.items())
        notices.append(("budget_stretched " + " ".join(apart), "budget_stretched", (
            f"the {budget} overhead budget spaces capture out on this model: {spacing} "
            f"({cadence_text(schedule)}); for more, pass a larger "
            f"attach(overhead_budget=...) or None for a fixed schedule")))
    if reduced is not None:
        notices.append(("probe_reduced", "probe_reduced", (
            f"the {budget} overhead budget pays for maps of {reduced[0]} of the {reduced[1]} "
            f"probe samples on this model ({cadence_text(schedule)}), so maps "
            f"show that many (class proportions kept; never fewer than {MIN_MAP_SAMPLES}); "
            f"for maps of the whole probe, pass a larger attach(overhead_budget=...) or None "
            f"for a fixed schedule")))
    if ending and controller.over_budget:
        notices.append(("over_budget", "over_budget", (
            f"capture took {controller.overhead:.1%} of the training time, over the {budget} "
            f"budget: the run ended before capture had paid back what it spent beyond the "
            f"budget ({cadence_text(schedule)}; the first firings' warm-up); "
            f"attach(overhead_budget=None) fixes the schedule at the given every")))
    return notices
