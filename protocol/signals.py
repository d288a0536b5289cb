"""The signal registry: every training signal sentrycam records, declared once.

A :class:`Signal` says what a name on the wire means: its scope (one value per step in a
``Scalars`` message, or one value per layer in a ``LayerStats`` message), where it comes from,
how the dashboard shows it (a layer x step heatmap row or a line in a curve panel, with its
title and colour scale) and what it measures. Everything else is derived from :data:`SIGNALS`:

- capture packs the values it reduces on the device in registry order: :func:`packed` gives
  the order of a source's per-step head and per-layer statistics (so the parameter telemetry
  vector is [len(TELEMETRY_SCALARS) + len(PARAMETER_STATS) * L] and an activation statistics
  vector is [len(ACTIVATION_STATS)]);
- the dashboard builds its heatmaps from :func:`heatmaps` and its curve panels from
  :func:`curve_panels` / :func:`curve_of`;
- the audit detectors read values by the names of the constants below, never by bare strings.

A signal's position in a packed vector is its place among the registry's signals of the same
source and scope. Wire names never change: stored runs and docs/schema.md use them. A name
with ``*`` is a family matched with shell-style wildcards (names the user logs, or one per
optimizer parameter group); exact names are matched before families.

Torch-free by design: capture, the backend and the frontend all import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase


class Scope(str, Enum):
    """Where a signal's values travel."""

    STEP = "step"  # one float per step in Scalars.values
    LAYER = "layer"  # one float per layer in LayerStats.values [layers, stats]


class Source(str, Enum):
    """What produces a signal."""

    PARAMETERS = "parameters"  # gradient and weight telemetry (capture/param_telemetry.py)
    ACTIVATIONS = "activations"  # per-layer activation statistics (capture/activations.py)
    LOSS = "loss"  # the hooked criterion, or run.log(loss=...)
    OPTIMIZER = "optimizer"  # the optimizer's parameter groups
    ATTENTION = "attention"  # attention maps of the probe pass (capture/attention.py)
    USER = "user"  # anything else given to run.log(...)


class View(str, Enum):
    """How the dashboard shows a signal."""

    NONE = "none"
    HEATMAP = "heatmap"  # a layer x step heatmap (layer scope)
    CURVE = "curve"  # a line in the curve panel named by ``panel`` (step scope)


#: Sources whose values capture reduces on the device and packs into one vector.
PACKED_SOURCES = (Source.PARAMETERS, Source.ACTIVATIONS)


@dataclass(frozen=True)
class Signal:
    """One recorded quantity. ``title``: its heatmap title or the name of its curve panel
    (``panel``); ``log_scale``: colour (heatmap) or y axis (curve panel) on a log scale;
    ``packed``: False for a value capture derives on the host instead of reducing it on the
    device (it then has no position)."""

    name: str
    scope: Scope
    source: Source
    meaning: str
    view: View = View.NONE
    title: str = ""
    log_scale: bool = False
    packed: bool = True

    @property
    def family(self) -> bool:
        return "*" in self.name

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.name) if self.family else name == self.name


# -- per step (Scalars) ----------------------------------------------------------------------

LOSS = Signal("loss", Scope.STEP, Source.LOSS, "training loss of the step's batch",
              View.CURVE, "loss")
LR = Signal("lr", Scope.STEP, Source.OPTIMIZER, "learning rate of the first parameter group",
            View.CURVE, "learning rate", log_scale=True)
LR_GROUP = Signal("lr_*", Scope.STEP, Source.OPTIMIZER,
                  "learning rate of parameter group i (lr_group<i>) where it differs from lr",
                  View.CURVE, "learning rate", log_scale=True)
GRAD_NORM = Signal("grad_norm", Scope.STEP, Source.PARAMETERS,
                   "global L2 norm of the gradients", View.CURVE, "gradient norm")
#: The gradient norm after clipping (``clip_grad_norm_``, ``clip_grad_value_``), logged beside
#: GRAD_NORM (then the norm before clipping) on steps whose gradients were clipped.
GRAD_NORM_CLIPPED = f"{GRAD_NORM.name}_clipped"
GRAD_COS = Signal("grad_cos", Scope.STEP, Source.PARAMETERS,
                  "cosine between this telemetry step's gradient and the previous one's "
                  "(strided sample)")
UPDATE_RATIO = Signal("update_ratio", Scope.STEP, Source.PARAMETERS,
                      "|weight update| / |weights| of the whole model (strided sample)")
NONFINITE_GRAD = Signal("nonfinite_grad", Scope.STEP, Source.PARAMETERS,
                        "1.0 when the gradient norm is NaN/Inf, else 0.0", packed=False)
VAL_LOSS = Signal("val_loss", Scope.STEP, Source.USER, "validation loss (run.log)",
                  View.CURVE, "loss")
ANY_LOSS = Signal("*loss*", Scope.STEP, Source.USER, "any other logged loss (run.log)",
                  View.CURVE, "loss")
VAL_METRIC = Signal("val_*", Scope.STEP, Source.USER,
                    "validation metrics other than losses, e.g. val_acc (run.log)",
                    View.CURVE, "validation metrics")

# -- per layer (LayerStats) ------------------------------------------------------------------

LAYER_GRAD_NORM = Signal("grad_norm", Scope.LAYER, Source.PARAMETERS,
                         "L2 norm of the gradients of the layer's own parameters",
                         View.HEATMAP, "gradient norm", log_scale=True)
WEIGHT_NORM = Signal("weight_norm", Scope.LAYER, Source.PARAMETERS,
                     "L2 norm of the layer's own parameters")
LAYER_UPDATE_RATIO = Signal("update_ratio", Scope.LAYER, Source.PARAMETERS,
                            "|weight update| / |weights| of the layer (strided sample)",
                            View.HEATMAP, "update / weight", log_scale=True)
ACT_MEAN = Signal("act_mean", Scope.LAYER, Source.ACTIVATIONS,
                  "mean of every finite value of the layer's output on a training batch")
ACT_STD = Signal("act_std", Scope.LAYER, Source.ACTIVATIONS,
                 "standard deviation of the same values", View.HEATMAP, "activation std")
DEAD_FRAC = Signal("dead_frac", Scope.LAYER, Source.ACTIVATIONS,
                   "fraction of units never > 0 anywhere in the batch", View.HEATMAP,
                   "dead fraction")
SAT_FRAC = Signal("sat_frac", Scope.LAYER, Source.ACTIVATIONS,
                  "fraction of values within 1% of a bounded activation's bounds, or with "
                  "|x| > 3 on other layers")
EFF_RANK = Signal("eff_rank", Scope.LAYER, Source.ACTIVATIONS,
                  "exp(entropy of the normalised singular values) of the centred [B, C] matrix "
                  "of pooled features: 1 for rank one, C when perfectly spread, 0 for a "
                  "constant (the geometry metric of the same name uses this definition)",
                  View.HEATMAP, "effective rank")
NONFINITE = Signal("nonfinite", Scope.LAYER, Source.ACTIVATIONS,
                   "count of NaN/Inf values in the layer's output (the other statistics skip "
                   "them)")

# -- per attention head, at snapshot steps (LayerStats, layer "<module>:head<h>") ----------

ATTN_ENTROPY = Signal("attn_entropy", Scope.LAYER, Source.ATTENTION,
                      "mean entropy (nats) of the head's attention over keys, over every query "
                      "token of the probe: 0 when all weight goes to one key, log(keys) when "
                      "uniform")
ATTN_MAX = Signal("attn_max", Scope.LAYER, Source.ATTENTION,
                  "mean over the probe's query tokens of the head's largest attention weight")
ATTN_AGREEMENT = Signal("attn_agreement", Scope.LAYER, Source.ATTENTION,
                        "mean over the module's other heads of 1 - total variation distance "
                        "between the two heads' attention rows (1: the heads attend alike)")

#: Every signal, in declaration order (the packing order within a source and scope).
#: Families are tried in this order too: a logged "val_loss2" is a loss before it is a
#: validation metric.
SIGNALS: tuple[Signal, ...] = (
    LOSS, VAL_LOSS, ANY_LOSS, VAL_METRIC, LR, LR_GROUP,
    GRAD_NORM, GRAD_COS, UPDATE_RATIO, NONFINITE_GRAD,
    # Interleaved so that the heatmaps come in the dashboard's order; each source keeps its
    # own packing order (parameters: grad_norm, weight_norm, update_ratio).
    LAYER_GRAD_NORM, ACT_MEAN, ACT_STD, DEAD_FRAC, WEIGHT_NORM, LAYER_UPDATE_RATIO,
    SAT_FRAC, EFF_RANK, NONFINITE, ATTN_ENTROPY, ATTN_MAX, ATTN_AGREEMENT,
)


def packed(source: Source, scope: Scope, registry: tuple[Signal, ...] = SIGNALS
           ) -> tuple[str, ...]:
    """Names of the packed signals of ``source`` at ``scope``, in packing order."""
    return tuple(s.name for s in registry
                 if s.source is source and s.scope is scope and s.packed and not s.family)


#: The per-step head of the parameter telemetry vector.
TELEMETRY_SCALARS = packed(Source.PARAMETERS, Scope.STEP)
#: Per-layer parameter telemetry (the stats of its LayerStats messages), in packing order.
PARAMETER_STATS = packed(Source.PARAMETERS, Scope.LAYER)
#: Per-layer activation statistics (the stats of their LayerStats messages), in packing order.
ACTIVATION_STATS = packed(Source.ACTIVATIONS, Scope.LAYER)
#: Per-head attention statistics of a snapshot (the stats of its attention LayerStats).
ATTENTION_STATS = tuple(s.name for s in SIGNALS if s.source is Source.ATTENTION)


def heatmaps(registry: tuple[Signal, ...] = SIGNALS) -> tuple[Signal, ...]:
    """The layer x step heatmaps the dashboard shows, in registry order."""
    return tuple(s for s in registry if s.view is View.HEATMAP)


def curve_panels(registry: tuple[Signal, ...] = SIGNALS) -> tuple[tuple[str, bool], ...]:
    """(title, log y axis) of each curve panel, in the order their first signal is declared."""
    panels: dict[str, bool] = {}
    for s in registry:
        if s.view is View.CURVE:
            panels[s.title] = panels.get(s.title, False) or s.log_scale
    return tuple(panels.items())


def curve_of(name: str, registry: tuple[Signal, ...] = SIGNALS) -> str | None:
    """The curve panel a per-step scalar called ``name`` is drawn in, or None: the signal with
    exactly that name, else the first family that matches it."""
    steps = [s for s in registry if s.scope is Scope.STEP]
    signal = next((s for s in steps if not s.family and s.name == name), None) or next(
        (s for s in steps if s.family and s.matches(name)), None)
    return signal.title if signal is not None and signal.view is View.CURVE else None
