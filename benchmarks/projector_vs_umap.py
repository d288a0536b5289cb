"""Projector vs what a user would run instead, snapshot by snapshot, side by side in one process.

Data: (1) real snapshots: penultimate features (128-d) of all 1,797 digits from the demo CNN,
captured at several points of its training; (2) a synthetic drifting mixture of 10 clusters in
512 dimensions at 2,000 and 10,000 points. For every snapshot it times ``Projector.update``
(a layer's first snapshot: until its background fit is done) and three umap-learn baselines
(numba warmed for all first): a refit (``fit_transform``), a warm start from the previous
snapshot's map (``init=``) and ``AlignedUMAP`` extended by the snapshot (``update``). Then it
computes nn@15 and trustworthiness@15 of every map (off the clock) and, at the end, the
temporal ranking and temporal nn@5 of every sequence of maps. Prints one line per snapshot and
a median summary against the issue-14 targets (time <= 1/10 of the refit, nn@15 and trust@15
within 0.02 of it, temporal ranking above both memory baselines), naming each shortfall; the
result file (``--json``) also has the mean, p95 and max of the times, and every snapshot.

    python benchmarks/projector_vs_umap.py [--quick] [--snapshots 8] [--sizes 2000 10000]
        [--devices cpu cuda] [--json OUT]

``--devices``: the projector runs on each device in turn on the same snapshots; the first is
"ours" (the targets are checked on it), each other one "ours_<device>" beside it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import Recorder, add_json_argument, distribution  # noqa: E402
from synthetic_features import drifting_mixture  # noqa: E402

from sentrycam.projector import Projector, metrics, warm_up  # noqa: E402

log = logging.getLogger("projector_vs_umap")
METRIC_ROWS = 2000  # quality on (up to) this many query points; neighbours among all points


def digits_snapshots(n_snapshots: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Penultimate CNN features float32 [1797, 128] of all digits at ``n_snapshots`` points of
    training (after 0, 15, 30, ... steps, spaced out), with the digit labels."""
    from sentrycam.capture.demo import batches, build_model, load_digits_data

    data = load_digits_data(seed)
    x_all = torch.cat([data.x_train, data.x_val])
    labels = torch.cat([data.y_train, data.y_val]).numpy()
    model = build_model("cnn", seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    stream = batches(data.x_train, data.y_train, 64, seed)
    for t in range(n_snapshots):
        for _ in range(15 + 10 * t):
            x, y, _ = next(stream)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            features = model.features(x_all).numpy().astype(np.float32)
        model.train()
        yield features, labels


def warm_numba() -> None:
    """Compile pynndescent, umap-learn (AlignedUMAP too) and the projector's code once, off
    the clock."""
    import umap

    warm = np.random.default_rng(1).normal(size=(600, 32)).astype(np.float32)
    first = umap.UMAP(n_neighbors=15, min_dist=0.1).fit_transform(warm)
    umap.UMAP(n_neighbors=15, min_dist=0.1, init=first).fit_transform(warm)
    aligned = umap.AlignedUMAP(n_neighbors=15, min_dist=0.1).fit(
        [warm, warm], relations=[IDENTITY(len(warm))])
    aligned.update(warm, relations=IDENTITY(len(warm)))
    warm_up(nn_descent=True)


def IDENTITY(n: int) -> dict[int, int]:  # noqa: N802 (reads as a constant relation)
    """AlignedUMAP's relation between two snapshots of the same ``n`` probe rows."""
    return {i: i for i in range(n)}


class Baselines:
    """What a user would run instead of the projector, one snapshot at a time: a umap-learn
    refit, umap-learn warm-started from the previous snapshot's map (``init=``), and
    AlignedUMAP extended by each snapshot (``update``; it needs two snapshots to start, so on
    the first both memory baselines are the refit). ``step(features)`` returns
    {name: (coords float32 [N, 2], seconds)}."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None
        self.first_features: np.ndarray | None = None
        self.aligned = None

    def step(self, features: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
        import umap

        maps = {"umap": timed(lambda: umap.UMAP(n_neighbors=15, min_dist=0.1)
                              .fit_transform(features))}
        # The first snapshot has no previous map: the warm start begins as the refit.
        maps["warm"] = maps["umap"] if self.previous is None else timed(
            lambda: umap.UMAP(n_neighbors=15, min_dist=0.1, init=self.previous)
            .fit_transform(features))
        self.previous = maps["warm"][0]
        maps["aligned"] = (maps["umap"] if self.first_features is None
                           else timed(lambda: self._aligned(features)))
        self.first_features = features if self.first_features is None else self.first_features
        return maps

    def _aligned(self, features: np.ndarray) -> np.ndarray:
        import umap

        if self.aligned is None:
            self.aligned = umap.AlignedUMAP(n_neighbors=15, min_dist=0.1).fit(
                [self.first_features, features], relations=[IDENTITY(len(features))])
        else:
            self.aligned.update(features, relations=IDENTITY(len(features)))
        return np.asarray(self.aligned.embeddings_[-1], dtype=np.float32)


def timed(work) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


BASELINES = ("umap", "warm", "aligned")


def ours(devices: list[str]) -> dict[str, str]:
    """The projector's method name on each device: the first is "ours"."""
    return {("ours" if i == 0 else f"ours_{device}"): device for i, device in enumerate(devices)}


def project(projector: Projector, features: np.ndarray, labels: np.ndarray
            ) -> tuple[np.ndarray, float, float]:
    """One snapshot's map of record float32 [N, 2], the seconds to the first map returned, and
    the seconds until the map of record (a first snapshot's fit runs in the background: waited
    for on the clock, so the baselines run alone)."""
    started = time.perf_counter()
    returned = projector.update(features, np.arange(len(features)), labels)
    first_map_s = time.perf_counter() - started
    fitted = projector.wait_for_fit()
    return (returned if fitted is None else fitted), first_map_s, time.perf_counter() - started


def run_sequence(name: str, snapshots: Iterator[tuple[np.ndarray, np.ndarray]],
                 seed: int, devices: list[str]
                 ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The sequence's summary (medians over snapshots, time spreads, temporal ranking and
    temporal nn@5 of every method) and its per-snapshot rows."""
    projectors = {method: Projector(seed=seed, device=device)
                  for method, device in ours(devices).items()}
    methods = (*projectors, *BASELINES)
    baselines = Baselines()
    rows: list[dict[str, float]] = []
    highs: list[np.ndarray] = []
    lows: dict[str, list[np.ndarray]] = {method: [] for method in methods}
    for t, (features, labels) in enumerate(snapshots):
        maps, first_map_s = {}, {}
        for method, projector in projectors.items():
            coords, first_map_s[method], seconds = project(projector, features, labels)
            maps[method] = (coords, seconds)
        maps.update(baselines.step(features))
        query = np.random.default_rng(t).choice(len(features), min(METRIC_ROWS, len(features)),
                                                replace=False)
        row = {"t": t, "n": len(features), "fraction": projectors["ours"].last_info["fraction"],
               "first_map_s": first_map_s["ours"],
               **{f"first_map_s_{m}": s for m, s in first_map_s.items() if m != "ours"}}
        for method, (low, seconds) in maps.items():
            lows[method].append(low)
            row[f"{method}_s"] = seconds
            row[f"nn_{method}"] = metrics.neighbour_preservation(features, low, 15, query)
            row[f"trust_{method}"] = metrics.trustworthiness(features, low, 15, query)
        for method in projectors:
            row[f"ratio{method[4:]}"] = row[f"{method}_s"] / row["umap_s"]
        rows.append(row)
        highs.append(features)
        print(f"{name:>14} t={t} n={row['n']:>5} " + " ".join(
            f"{m} {row[f'{m}_s']:6.2f}s nn {row[f'nn_{m}']:.3f} tr {row[f'trust_{m}']:.3f} |"
            for m in methods), flush=True)
    return summarise(rows, highs, lows), rows


def summarise(rows: list[dict[str, float]], highs: list[np.ndarray],
              lows: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """Medians over snapshots of every figure of every method in ``lows``, the mean, p95 and
    max of the times, and the temporal ranking and temporal nn@5 of each method's maps."""
    methods = list(lows)
    extra = [m for m in methods if m.startswith("ours_")]
    ratios = ["ratio", *(f"ratio{m[4:]}" for m in extra)]
    firsts = ["first_map_s", *(f"first_map_s_{m}" for m in extra)]
    keys = [*ratios, *(f"{m}_s" for m in methods), *(f"nn_{m}" for m in methods),
            *(f"trust_{m}" for m in methods)]
    summary = {key: float(np.median([r[key] for r in rows])) for key in keys}
    for key in (*(f"{m}_s" for m in methods), *ratios, *firsts):
        spread = distribution(r[key] for r in rows)
        summary.update({f"{key}_{figure}": spread[figure] for figure in ("mean", "p95", "max")})
    sample = np.random.default_rng(0).choice(len(highs[0]), min(2000, len(highs[0])),
                                             replace=False)
    high = [h[sample] for h in highs]
    for method, maps in lows.items():
        low = [y[sample] for y in maps]
        summary[f"tr_{method}"] = metrics.temporal_ranking(high, low)
        summary[f"tnn_{method}"] = (metrics.temporal_neighbour_preservation(high, low, 5)
                                    if len(high) > 5 else float("nan"))
    return summary


def shortfalls(s: dict[str, float]) -> list[str]:
    """The issue-14 targets a sequence misses: time <= 1/10 of a refit (median), nn@15 and
    trust@15 within 0.02 of the refit, temporal ranking above both memory baselines."""
    missed = []
    if s["ratio"] > 0.1:
        missed.append(f"time ratio {s['ratio']:.3f} > 0.1")
    for metric in ("nn", "trust"):
        if s[f"{metric}_ours"] < s[f"{metric}_umap"] - 0.02:
            missed.append(f"{metric}@15 {s[f'{metric}_ours']:.3f} < refit "
                          f"{s[f'{metric}_umap']:.3f} - 0.02")
    for method in ("warm", "aligned"):
        if s["tr_ours"] <= s[f"tr_{method}"]:
            missed.append(f"temporal ranking {s['tr_ours']:.3f} <= {method} "
                          f"{s[f'tr_{method}']:.3f}")
    return missed


def report(name: str, s: dict[str, float]) -> list[str]:
    methods = [key[3:] for key in s if key.startswith("tr_")]
    print(f"{name:>14} MEDIAN ratio {s['ratio']:.3f} | " + " | ".join(
        f"{m}: {s[f'{m}_s']:.2f}s nn@15 {s[f'nn_{m}']:.3f} trust@15 {s[f'trust_{m}']:.3f} "
        f"TR {s[f'tr_{m}']:.3f} tnn@5 {s[f'tnn_{m}']:.3f}" for m in methods), flush=True)
    missed = shortfalls(s)
    print(f"{name:>14} targets: {'all met' if not missed else 'MISSED ' + '; '.join(missed)}",
          flush=True)
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="6 snapshots, 2,000 synthetic points and digits only")
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--devices", nargs="+", default=["cpu"],
                        help="the projector's devices, side by side (the first is checked)")
    add_json_argument(parser)
    args = parser.parse_args()
    recorder = Recorder("projector_vs_umap", args)
    logging.basicConfig(level=logging.WARNING)
    n_snapshots = 6 if args.quick else max(args.snapshots, 6)
    sizes = [2000] if args.quick else args.sizes
    print(f"torch threads {torch.get_num_threads()}; warming numba ...", flush=True)
    warm_numba()
    sequences = {"digits-cnn": digits_snapshots(n_snapshots, args.seed)}
    sequences.update({f"mixture-{size}": drifting_mixture(size, 512, n_snapshots, args.seed)
                      for size in sizes})
    results, per_snapshot = {}, {}
    for name, snapshots in sequences.items():
        results[name], per_snapshot[name] = run_sequence(name, snapshots, args.seed,
                                                         args.devices)
    missed = {name: report(name, summary) for name, summary in results.items()}
    recorder.write(args.json, [{"sequence": name, **summary, "bars_met": not missed[name],
                                "shortfalls": missed[name]}
                               for name, summary in results.items()],
                   snapshots=per_snapshot, threads=torch.get_num_threads())
    return 0 if not any(missed.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
