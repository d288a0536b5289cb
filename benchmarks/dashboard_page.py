"""What the latency benchmark watches and does in the dashboard page (headless Chromium).

``WATCH_JS`` records, in the page, every state of the embedding view that was painted: the step
in the view's title (the title is set after the points, so a title naming step S means S's
points are in the data), the number of points and what the colour column holds. ``interact``
plays a user at the page's widgets while snapshots stream and times each action until its
answer is painted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from results import distribution

# window.__drawn[step] = {t, n}: when a map of that step was first painted (Date.now(), ms).
# window.__states: [{t, data_t, step, n, colour}] for every painted change of the points or the
# title (data_t: when the points' data last changed before it);
# colour: "class" (integer codes, some > 1: label, prediction), "correctness" (0/1) or "scalar"
# (loss, confidence). Also the page's responsiveness: the longest main-thread task, and how
# late a 50 ms timer fires.
WATCH_JS = """() => {
  window.__drawn = {}; window.__states = []; window.__timerLag = []; window.__longest = 0;
  const TITLE = / at step (\\d+) /;
  let source = null, title = null, version = 0, dataAt = 0, last = null;
  const find = () => {
    if (!source) for (const d of Bokeh.documents) {
      const s = d.get_model_by_name('sc-embedding-points');
      if (s) { source = s;
        for (const signal of [s.change, s.patching, s.streaming]) signal.connect(() => { version++; dataAt = Date.now(); }); }
    }
    // The title names a step once the first map is drawn; until then, look for it each frame.
    if (source && !title && source.data.x.length)
      for (const d of Bokeh.documents) for (const m of d._all_models.values())
        if (typeof m.text === 'string' && TITLE.test(m.text)) { title = m; break; }
  };
  const colourOf = (c) => { let integer = true, big = false;
    for (let i = 0; i < Math.min(c.length, 500); i++) { const v = c[i];
      if (Number.isNaN(v)) continue;
      if (v !== Math.round(v)) integer = false;
      if (v > 1) big = true; }
    return integer ? (big ? 'class' : 'correctness') : 'scalar'; };
  const tick = () => { find();
    if (source && title) { const match = TITLE.exec(title.text);
      const step = match ? Number(match[1]) : null, key = step + ':' + version;
      if (step !== null && key !== last) { last = key;
        const n = source.data.x.length, colour = colourOf(source.data.c), data_t = dataAt;
        requestAnimationFrame(() => { const t = Date.now();
          window.__states.push({t, data_t, step, n, colour});
          if (!(step in window.__drawn)) window.__drawn[step] = {t, n}; }); } }
    requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  let expected = performance.now() + 50;
  setInterval(() => { const now = performance.now(); window.__timerLag.push(now - expected);
                      expected = now + 50; }, 50);
  new PerformanceObserver(list => { for (const e of list.getEntries())
      window.__longest = Math.max(window.__longest, e.duration); }).observe({entryTypes: ['longtask']});
}"""


def drawn(page: Any) -> dict[int, dict[str, float]]:
    """step -> {t (ms since the epoch), n}: when each step's map was first painted."""
    return {int(step): value for step, value in page.evaluate("() => window.__drawn").items()}


def wait_drawn(page: Any, step: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.evaluate(f"() => {step} in window.__drawn"):
            return True
        time.sleep(0.05)
    return False


def responsiveness(page: Any) -> dict[str, float | None]:
    """The longest main-thread task and how late the page's 50 ms timer fired (mean, p95, p99,
    max; ms)."""
    lag = distribution(page.evaluate("() => window.__timerLag"))
    return {"longest_task_ms": float(page.evaluate("() => window.__longest")),
            **{f"timer_lag_{key}_ms": lag[key] for key in ("mean", "p95", "p99", "max")}}


@dataclass(frozen=True)
class Action:
    """One user action at the embedding view and how to recognise its painted answer."""

    name: str
    perform: Callable[[Any], None]
    answered: Callable[[dict[str, Any], int], bool]  # (painted state, first map's step)


def _colour(mode: str, colour_class: str) -> Action:
    def perform(page: Any) -> None:
        page.locator('.sc-embedding select:has(option[value="confidence"])').first.select_option(
            mode)
    return Action(f"colour by {mode}", perform,
                  lambda state, first: state["colour"] == colour_class)


def _slider_to_first(page: Any) -> None:
    slider = page.locator(".sc-embedding input[type=range]").first
    slider.focus()
    slider.press("Home")


def _live_on(page: Any) -> None:
    page.locator(".sc-embedding button", has_text="live").first.click()


#: A cycle of actions; each one's answer differs from what is painted before it.
ACTIONS = (
    _colour("loss", "scalar"),
    Action("slider to the first snapshot", _slider_to_first,
           lambda state, first: state["step"] == first),
    _colour("correctness", "correctness"),
    Action("live (back to the newest map)", _live_on, lambda state, first: state["step"] > first),
    _colour("label", "class"),
)


def interact(page: Any, count: int, first_step: int, think_s: float = 1.0,
             timeout_s: float = 30.0) -> dict[str, Any]:
    """Perform ``count`` actions from ``ACTIONS`` in turn, ``think_s`` apart; each one is timed
    from just before the widget is touched to the first painted state that answers it.
    Returns the mean, p50, p95, p99 and longest seconds, the median time until the answer's
    data was in the page (the rest is drawing), and the actions not answered within
    ``timeout_s``."""
    times: list[float] = []
    unanswered: list[str] = []
    per_action: dict[str, list[float]] = {}
    data_in: list[float] = []  # touched -> the answer's data in the page (the rest: drawing)
    for i in range(count):
        action = ACTIONS[i % len(ACTIONS)]
        started = page.evaluate("() => Date.now()")
        action.perform(page)
        answer = _wait_answer(page, action, started, first_step, timeout_s)
        if answer is None:
            unanswered.append(action.name)
        else:
            times.append((answer["t"] - started) / 1000)
            per_action.setdefault(action.name, []).append(times[-1])
            data_in.append((answer["data_t"] - started) / 1000)
        time.sleep(think_s)
    spread = distribution(times)
    return {"actions": count, "answered": len(times), "unanswered": unanswered,
            **{f"{key}_s": spread[key] for key in ("mean", "p50", "p95", "p99", "max")},
            "data_in_p50_s": float(np.median(data_in)) if data_in else None,
            "median_by_action": {name: float(np.median(v)) for name, v in per_action.items()}}


def _wait_answer(page: Any, action: Action, started_ms: float, first_step: int,
                 timeout_s: float) -> dict[str, Any] | None:
    """The first painted state after ``started_ms`` that answers ``action``, or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = page.evaluate(f"() => window.__states.filter(s => s.t > {started_ms})")
        for state in states:
            if action.answered(state, first_step):
                return state
        time.sleep(0.03)
    return None
