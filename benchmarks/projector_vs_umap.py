"""Projector vs umap-learn, snapshot by snapshot, side by side in one process.

Data: (1) real snapshots: penultimate features (128-d) of all 1,797 digits from the demo CNN,
captured at several points of its training; (2) a synthetic drifting mixture of 10 clusters in
512 dimensions at 2,000 and 10,000 points. For every snapshot it times ``Projector.update`` and
umap-learn's ``fit_transform`` (numba warmed for both first), then computes nn@15 and
trustworthiness@15 of both maps (off the clock) and, at the end, the temporal ranking of both
sequences. Prints one line per snapshot and a median summary with the quality bars; the result
file (``--json``) also has the mean, p95 and max of both times per sequence, and every snapshot.

    python benchmarks/projector_vs_umap.py [--quick] [--snapshots 8] [--sizes 2000 10000]
        [--json OUT]
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

from sentrycam.projector import Projector, metrics  # noqa: E402

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
    """Compile pynndescent, umap-learn and the projector's graph code once, off the clock."""
    import umap

    warm = np.random.default_rng(1).normal(size=(600, 32)).astype(np.float32)
    umap.UMAP(n_neighbors=15, min_dist=0.1).fit_transform(warm)
    projector = Projector(seed=1, first_steps=2, steps=2)
    for _ in range(2):  # the second update compiles NN-descent's warm-start path
        projector.update(warm, np.arange(len(warm)))


def run_sequence(name: str, snapshots: Iterator[tuple[np.ndarray, np.ndarray]],
                 seed: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The sequence's summary (medians over snapshots, time spreads, temporal ranking) and its
    per-snapshot rows."""
    import umap

    projector = Projector(seed=seed)
    rows: list[dict[str, float]] = []
    highs, ours, theirs = [], [], []
    for t, (features, labels) in enumerate(snapshots):
        ids = np.arange(len(features))
        started = time.perf_counter()
        coords = projector.update(features, ids, labels)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        baseline = umap.UMAP(n_neighbors=15, min_dist=0.1).fit_transform(features)
        umap_s = time.perf_counter() - started
        query = np.random.default_rng(t).choice(len(features), min(METRIC_ROWS, len(features)),
                                                replace=False)
        row = {"t": t, "n": len(features), "ours_s": ours_s, "umap_s": umap_s,
               "ratio": ours_s / umap_s, "fraction": projector.last_info["fraction"],
               "nn_ours": metrics.neighbour_preservation(features, coords, 15, query),
               "nn_umap": metrics.neighbour_preservation(features, baseline, 15, query),
               "trust_ours": metrics.trustworthiness(features, coords, 15, query),
               "trust_umap": metrics.trustworthiness(features, baseline, 15, query)}
        rows.append(row)
        highs.append(features)
        ours.append(coords)
        theirs.append(baseline)
        print(f"{name:>14} t={t} n={row['n']:>5} ours {ours_s:6.2f}s umap {umap_s:6.2f}s "
              f"ratio {row['ratio']:.3f} frac {row['fraction']:.2f} | nn@15 {row['nn_ours']:.3f}"
              f" vs {row['nn_umap']:.3f} | trust@15 {row['trust_ours']:.3f} vs "
              f"{row['trust_umap']:.3f}", flush=True)
    summary = {key: float(np.median([r[key] for r in rows]))
               for key in ("ratio", "nn_ours", "nn_umap", "trust_ours", "trust_umap")}
    for key in ("ours_s", "umap_s", "ratio"):
        spread = distribution(r[key] for r in rows)
        summary.update({f"{key}_{figure}": spread[figure] for figure in ("mean", "p95", "max")})
    sample = np.random.default_rng(0).choice(len(highs[0]), min(2000, len(highs[0])),
                                             replace=False)
    summary["tr_ours"] = metrics.temporal_ranking([h[sample] for h in highs],
                                                  [y[sample] for y in ours])
    summary["tr_umap"] = metrics.temporal_ranking([h[sample] for h in highs],
                                                  [y[sample] for y in theirs])
    return summary, rows


def report(name: str, s: dict[str, float]) -> bool:
    ok_time = s["ratio"] <= 0.25
    ok_nn = s["nn_ours"] >= s["nn_umap"] - 0.05
    ok_trust = s["trust_ours"] >= s["trust_umap"] - 0.05
    ok_tr = s["tr_ours"] > s["tr_umap"]
    print(f"{name:>14} MEDIAN ratio {s['ratio']:.3f} [{'ok' if ok_time else 'MISSED'}] | nn@15 "
          f"{s['nn_ours']:.3f} vs {s['nn_umap']:.3f} [{'ok' if ok_nn else 'MISSED'}] | trust@15 "
          f"{s['trust_ours']:.3f} vs {s['trust_umap']:.3f} [{'ok' if ok_trust else 'MISSED'}] | "
          f"temporal ranking {s['tr_ours']:.3f} vs {s['tr_umap']:.3f} "
          f"[{'ok' if ok_tr else 'MISSED'}]", flush=True)
    return ok_time and ok_nn and ok_trust and ok_tr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="6 snapshots, 2,000 synthetic points and digits only")
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--seed", type=int, default=0)
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
        results[name], per_snapshot[name] = run_sequence(name, snapshots, args.seed)
    passed = {name: report(name, summary) for name, summary in results.items()}
    recorder.write(args.json, [{"sequence": name, **summary, "bars_met": passed[name]}
                               for name, summary in results.items()],
                   snapshots=per_snapshot, threads=torch.get_num_threads())
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
