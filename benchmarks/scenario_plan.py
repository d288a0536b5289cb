"""The scenario benchmark's plan: failure kinds and their families, learning-rate schedules,
optimizers, and the two disjoint splits (see docs/scenarios.md).

- **Tuning split** (:data:`TUNING`): the runs the detector constants were set and checked on.
  The original eight kinds on the MLP, CNN and GRU, seeds 0-1, Adam at a constant learning
  rate; healthy runs seeds 10-13 at a constant rate and with warm-up + cosine (the schedule
  the calibration was checked against), and seeds 20-31 with one-cycle and step-decay
  schedules under Adam and SGD (:data:`SCHEDULE_CHECKS`: the schedules' own rises and drops
  that the detectors calibrate to). Kinds of the tuning split only (:data:`TUNING_ONLY`:
  attention collapse, on the transformer; a learning rate blown up to NaN losses, on every
  architecture) seeds 0-1, with healthy transformer controls seeds 50-51.
- **Diagnosis tuning split** (:data:`TUNING_DIAGNOSIS`): the runs the diagnosis rules were set
  on, besides the tuning split: every kind on every architecture, seeds 40-41, schedules and
  optimizers rotated from another offset than the test split's. No healthy runs (they have no
  incident to diagnose).
- **Test split** (:data:`TEST`): only scored, never tuned on. Every kind (the eight above and
  eight designed after the constants were set), all four architectures (adding a small
  transformer on tokens), seeds 100 and up, schedules and optimizers rotated over the runs;
  healthy runs with every schedule and optimizer.
- **Demo-like tuning runs** (:data:`DEMO_LIKE_SEEDS`, seeds 70-79): the demo CNN on digits
  trained by ``benchmarks/demo_health.py`` (Adam at the demo's learning rate and higher), for
  the diagnosis fit's examples of a late blow-up and a batch-norm spike.

:func:`check_disjoint` asserts that no (kind, arch, seed) run is in both splits and that no
seed is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import cycle
from typing import Callable

HEALTHY = "healthy"

#: Kind -> the diagnosis family an incident of that kind should carry.
FAMILY: dict[str, str] = {
    # the eight kinds the constants were tuned on
    "lr_spike": "instability", "slow_divergence": "instability",
    "optimizer_corruption": "optimizer", "dead_units": "collapse",
    "vanishing_gradients": "stalled", "label_noise": "data", "overfitting": "overfitting",
    "forgetting": "forgetting",
    # designed after the constants were set: scored on the test split only
    "weight_corruption": "instability", "lr_too_small": "stalled",
    "heavy_clipping": "stalled", "class_swap": "data", "repeating_loader": "data",
    "input_drift": "data", "noisy_inputs": "data", "class_switch": "forgetting",
    # tuning split only (TUNING_ONLY): the test split gains them in its next revision
    "attention_collapse": "collapse", "lr_blowup": "instability",
    HEALTHY: HEALTHY,
}
ARCHITECTURES = ("mlp", "cnn", "gru", "transformer")
#: Kinds of the tuning split only -> the architectures that show them -> the optimizer: attention
#: collapse needs attention modules; a learning rate blown up (under SGD) to non-finite losses
#: gives the diagnosis its examples of NaN losses (added after the test split was scored).
TUNING_ONLY: dict[str, tuple[tuple[str, ...], str]] = {
    "attention_collapse": (("transformer",), "adam"), "lr_blowup": (ARCHITECTURES, "sgd")}
TUNED_KINDS = ("lr_spike", "slow_divergence", "label_noise", "dead_units",
               "vanishing_gradients", "overfitting", "forgetting", "optimizer_corruption")
KINDS = tuple(kind for kind in FAMILY if kind != HEALTHY and kind not in TUNING_ONLY)
OPTIMIZERS = ("adam", "sgd", "adamw")
#: Kinds that need an Adam-family optimizer (they corrupt its second-moment buffer).
ADAM_ONLY = frozenset({"optimizer_corruption"})


def _warmup_cosine(t: float) -> float:
    warm = 0.1
    if t < warm:
        return 0.05 + 0.95 * t / warm
    return _cosine((t - warm) / (1 - warm))


def _cosine(t: float) -> float:
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _step(t: float) -> float:
    return 0.3 ** int(3 * min(t, 0.999))


def _one_cycle(t: float) -> float:
    peak = 0.3
    if t < peak:
        return 0.04 + 0.96 * t / peak
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (t - peak) / (1 - peak)))


#: Schedule -> learning-rate factor of the base rate at fraction t in [0, 1) of the run.
SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda t: 1.0, "warmup_cosine": _warmup_cosine, "cosine": _cosine,
    "step": _step, "one_cycle": _one_cycle}


@dataclass(frozen=True)
class Scenario:
    """One run: failure ``kind`` (or healthy), architecture, seed, schedule, optimizer."""

    kind: str
    arch: str
    seed: int
    schedule: str = "constant"
    optimizer: str = "adam"

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.arch}-s{self.seed}-{self.schedule}-{self.optimizer}"


#: Tuning-only healthy runs: (schedule, optimizer) pairs whose learning rate moves by design.
SCHEDULE_CHECKS = (("one_cycle", "adam"), ("one_cycle", "sgd"), ("step", "adam"),
                   ("step", "sgd"))
TUNING_ARCHITECTURES = ("mlp", "cnn", "gru")


def _tuning() -> list[Scenario]:
    runs = [Scenario(kind, arch, seed) for arch in TUNING_ARCHITECTURES
            for kind in TUNED_KINDS for seed in (0, 1)]
    runs += [Scenario(HEALTHY, arch, 10 + i, schedule)
             for arch in TUNING_ARCHITECTURES for i, schedule in
             enumerate(("constant", "constant", "warmup_cosine", "warmup_cosine"))]
    runs += [Scenario(HEALTHY, arch, 20 + 4 * a + i, schedule, optimizer)
             for a, arch in enumerate(TUNING_ARCHITECTURES)
             for i, (schedule, optimizer) in enumerate(SCHEDULE_CHECKS)]
    runs += [Scenario(kind, arch, seed, "constant", optimizer)
             for kind, (archs, optimizer) in TUNING_ONLY.items()
             for arch in archs for seed in (0, 1)]
    runs += [Scenario(HEALTHY, "transformer", 50 + i, schedule)  # attention_collapse controls
             for i, schedule in enumerate(("constant", "warmup_cosine"))]
    return runs


def _every_kind(first_seed: int, seeds: int, offset: int = 0) -> list[Scenario]:
    """Every kind on every architecture, the (schedule, optimizer) pairs in turn from
    ``offset``, seeds ``first_seed`` .. ``first_seed + seeds - 1`` in turn."""
    pairs = [(s, o) for s in SCHEDULES for o in OPTIMIZERS]
    settings = cycle(pairs[offset:] + pairs[:offset])
    runs = []
    for arch in ARCHITECTURES:
        for kind in KINDS:
            schedule, optimizer = next(settings)
            if kind in ADAM_ONLY and optimizer == "sgd":
                optimizer = "adamw"
            runs.append(Scenario(kind, arch, first_seed + len(runs) % seeds, schedule,
                                 optimizer))
    return runs


def _test() -> list[Scenario]:
    runs = _every_kind(100, 3)
    healthy = [(s, o) for s in SCHEDULES for o in OPTIMIZERS]
    for i, (schedule, optimizer) in enumerate(healthy):
        runs.append(Scenario(HEALTHY, ARCHITECTURES[i % len(ARCHITECTURES)], 200 + i,
                             schedule, optimizer))
    return runs


#: The quick plan (a few minutes): test-split style runs with fresh seeds, for CI.
QUICK = (Scenario("lr_spike", "mlp", 300), Scenario("dead_units", "mlp", 300),
         Scenario("forgetting", "mlp", 300), Scenario(HEALTHY, "mlp", 301),
         Scenario(HEALTHY, "gru", 302, "warmup_cosine"))

TUNING: tuple[Scenario, ...] = tuple(_tuning())
TUNING_DIAGNOSIS: tuple[Scenario, ...] = tuple(_every_kind(40, 2, offset=7))
TEST: tuple[Scenario, ...] = tuple(_test())
SPLITS: dict[str, tuple[Scenario, ...]] = {
    "tuning": TUNING, "tuning-diagnosis": TUNING_DIAGNOSIS, "test": TEST, "quick": QUICK}


#: Seeds of the demo-like tuning runs (``demo_health.py --seeds``, the demo CNN at the demo's
#: learning rate and higher ones): examples of a late blow-up and a batch-norm spike for the
#: diagnosis fit (``diagnosis_fit.py --demo``). The demo health check itself uses seeds 0-2.
DEMO_LIKE_SEEDS = range(70, 80)


def check_disjoint() -> None:
    """No seed (hence no run) is shared between a tuning split (or the demo-like tuning runs)
    and the test split."""
    tuning = {s.seed for s in TUNING + TUNING_DIAGNOSIS} | set(DEMO_LIKE_SEEDS)
    shared = tuning & {s.seed for s in TEST}
    assert not shared, f"seeds in both splits: {sorted(shared)}"
