"""Which layers to capture, where to hook them, and how to pool them to one vector per sample.

A captured layer is named after its module: ``"features.3"`` is the output of module
``features.3``, ``"fc:input"`` the (first positional) input of module ``fc``.

Default choice (see :func:`choose_layers`): the penultimate representation (the input of the
final classifier) plus blocks at about 25/50/75% depth. For residual blocks the hook sits on the
branch output before the skip addition.
"""

from __future__ import annotations

import difflib
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.modules.pooling import (_AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd, _AvgPoolNd,
                                      _MaxPoolNd)
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from sentrycam.capture.activations import activation_stats, saturation_bounds
from sentrycam.capture.random_projection import MAX_FEATURE_DIM, PROJECTED_DIM, RandomProjection

#: Modules whose parameters make a representation worth tracking (candidates for depth blocks).
WEIGHT_TYPES: tuple[type, ...] = (nn.Linear, nn.Bilinear, _ConvNd, nn.RNNBase,
                                  nn.MultiheadAttention)
#: Normalisation layers: hooked instead of the weight layer they directly follow.
NORM_TYPES: tuple[type, ...] = (_BatchNorm, nn.LayerNorm, nn.GroupNorm, _InstanceNorm)
#: Modules whose 3-D outputs are [N, C, L] (channels first) rather than token sequences.
CHANNEL_TYPES: tuple[type, ...] = (_ConvNd, _BatchNorm, nn.GroupNorm, _InstanceNorm, _MaxPoolNd,
                                   _AvgPoolNd, _AdaptiveAvgPoolNd, _AdaptiveMaxPoolNd)
#: Children with these names hold a residual shortcut, not the main computation.
SKIP_NAMES = frozenset({"downsample", "shortcut", "skip"})
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_TRANSFORMER_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
DEPTH_FRACTIONS = (0.25, 0.5, 0.75)
ROOT_NAME = "(model)"


@dataclass(frozen=True)
class LayerSpec:
    """One captured layer. ``layout`` says how a 3-D tensor is read: ``"channels"`` [N, C, L],
    ``"tokens"`` [N, T, D] or ``"tokens_seq_first"`` [T, N, D]."""

    name: str
    module_name: str
    on_input: bool
    layout: str


def _display(module_name: str) -> str:
    return module_name or ROOT_NAME


def _layout(module: nn.Module) -> str:
    batch_first = getattr(module, "batch_first", None)
    attention = getattr(module, "self_attn", None)
    if batch_first is None and isinstance(attention, nn.MultiheadAttention):
        batch_first = attention.batch_first
    if batch_first is False:
        return "tokens_seq_first"
    return "channels" if isinstance(module, CHANNEL_TYPES) else "tokens"


def _spec(modules: dict[str, nn.Module], module_name: str, on_input: bool) -> LayerSpec:
    suffix = ":input" if on_input else ""
    return LayerSpec(_display(module_name) + suffix, module_name, on_input,
                     _layout(modules[module_name]))


TOKEN_POOLS = ("mean", "cls")


def check_token_pool(token_pool: Any) -> None:
    if token_pool not in TOKEN_POOLS:
        raise ValueError(f"token_pool must be one of {TOKEN_POOLS}, got {token_pool!r}")


def choose_layers(model: nn.Module, names: list[str] | tuple[str, ...] | None = None
                  ) -> list[LayerSpec]:
    """The layers to capture: ``names`` resolved (ValueError on an unknown one), or the default."""
    modules = dict(model.named_modules())
    if names is None:
        return default_layers(model)
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError("layers must be a list of module names, e.g. layers=['features.3', "
                         "'fc:input'], or None for the default choice")
    specs: dict[str, LayerSpec] = {}
    for name in names:
        module_name, _, hook = name.partition(":")
        if module_name == ROOT_NAME:
            module_name = ""
        if module_name not in modules or hook not in ("", "input"):
            raise ValueError(_unknown_layer_message(name, modules))
        spec = _spec(modules, module_name, hook == "input")
        specs.setdefault(spec.name, spec)
    return list(specs.values())


def _unknown_layer_message(name: str, modules: dict[str, nn.Module]) -> str:
    valid = [_display(n) for n in modules]
    close = difflib.get_close_matches(name.partition(":")[0], valid, n=5)
    examples = close or valid[1:9]
    return (f"layer {name!r} is not a module of this model; valid names include "
            f"{', '.join(repr(v) for v in examples)}. Use a name from model.named_modules(), "
            f"optionally followed by ':input' to capture that module's input")


def default_layers(model: nn.Module) -> list[LayerSpec]:
    """Penultimate representation plus depth blocks at 25/50/75% (block outputs before the skip)."""
    modules = dict(model.named_modules())
    classifier = _classifier(modules)
    specs = [_spec(modules, anchor, False) for anchor in _depth_anchors(model, classifier)]
    if classifier is not None:
        specs.append(_spec(modules, classifier, True))
    unique: dict[str, LayerSpec] = {}
    for spec in specs:
        unique.setdefault(spec.name, spec)
    return list(unique.values())


def _inside_attention(name: str, modules: dict[str, nn.Module]) -> bool:
    """True for submodules of a MultiheadAttention (its out_proj), which is captured as a whole."""
    parts = name.split(".")
    return any(isinstance(modules[".".join(parts[:i])], nn.MultiheadAttention)
               for i in range(1, len(parts)))


def _classifier(modules: dict[str, nn.Module]) -> str | None:
    """The last nn.Linear in registration order, else the last leaf module with parameters."""
    linears = [n for n, m in modules.items()
               if isinstance(m, nn.Linear) and not _inside_attention(n, modules)]
    if linears:
        return linears[-1]
    leaves = [n for n, m in modules.items()
              if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    return leaves[-1] if leaves else None


def _weight_layers(modules: dict[str, nn.Module], classifier: str | None) -> list[str]:
    """Weight layers in registration order, without the classifier and residual shortcuts."""
    found = []
    for name, module in modules.items():
        if not name or name == classifier or not isinstance(module, WEIGHT_TYPES):
            continue
        if SKIP_NAMES.intersection(name.split(".")) or _inside_attention(name, modules):
            continue
        found.append(name)
    return found


def _depth_anchors(model: nn.Module, classifier: str | None) -> list[str]:
    """Module names to hook at about 25/50/75% of the network's block depth."""
    modules = dict(model.named_modules())
    blocks: list[str] = []
    for name in _weight_layers(modules, classifier):
        anchor = _block_anchor(name, modules, classifier)
        if anchor not in blocks:
            blocks.append(anchor)
    if not blocks:
        return []
    picks = sorted({min(len(blocks) - 1, int(f * len(blocks))) for f in DEPTH_FRACTIONS})
    return [blocks[i] for i in picks]


def _parent(name: str) -> str:
    return name.rpartition(".")[0] if "." in name else ""


def _block_anchor(name: str, modules: dict[str, nn.Module], classifier: str | None) -> str:
    """Where to hook the block that weight layer ``name`` belongs to.

    A layer inside a custom block module (a ResNet BasicBlock, say) stands for the whole block:
    the block's last weight layer is hooked, so the capture is the branch output before the skip
    addition. Transformer layers are represented by their self-attention output. Layers directly
    in a container (Sequential) or in the model itself stand for themselves. A weight layer
    directly followed in its parent by norm layers is replaced by the last of those norms.
    A layer inside one item of a stack of attention layers (a Hugging Face encoder's
    ``encoder.layer.3``) stands for that item: its output hidden states.
    """
    stacked = _stacked_layer(name, modules)
    if stacked is not None:
        return stacked
    parent_name = _parent(name)
    parent = modules[parent_name]
    if isinstance(parent, _TRANSFORMER_LAYERS):
        return f"{parent_name}.self_attn"
    if parent_name and not isinstance(parent, _CONTAINERS):
        siblings = [n for n in _weight_layers(modules, classifier) if _parent(n) == parent_name]
        name = siblings[-1]
    return _trailing_norm(name, parent_name, parent)


def _stacked_layer(name: str, modules: dict[str, nn.Module]) -> str | None:
    """The outermost item of an nn.ModuleList that holds ``name`` and an attention module (by
    class name, as Hugging Face layers have), else None. torch's own transformer layers keep
    their self-attention anchor."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        item = ".".join(parts[:i])
        if not isinstance(modules[_parent(item)], nn.ModuleList) \
                or isinstance(modules[item], _TRANSFORMER_LAYERS):
            continue
        if any(type(m).__name__.endswith("Attention") for m in modules[item].modules()):
            return item
    return None


def _trailing_norm(name: str, parent_name: str, parent: nn.Module) -> str:
    children = list(parent.named_children())
    position = [child for child, _ in children].index(name.rpartition(".")[2])
    chosen = name
    for child_name, child in children[position + 1:]:
        if not isinstance(child, NORM_TYPES):
            break
        chosen = f"{parent_name}.{child_name}" if parent_name else child_name
    return chosen


def first_tensor(value: Any) -> torch.Tensor | PackedSequence:
    """The tensor a module's output stands for: itself, or the first item of a tuple/list/dict."""
    if isinstance(value, (torch.Tensor, PackedSequence)):
        return value
    if isinstance(value, (tuple, list)) and value:
        return first_tensor(value[0])
    if isinstance(value, dict) and value:
        return first_tensor(next(iter(value.values())))
    raise TypeError(f"cannot capture a value of type {type(value).__name__}: expected a tensor, "
                    "or a tuple/list/dict whose first item is a tensor")


def pool_features(value: Any, layout: str, token_pool: str = "mean",
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """One float32 vector per sample: [N, D].

    Conv maps [N, C, *spatial] -> mean over spatial; token sequences [N, T, D] (or [T, N, D] for
    seq-first modules) -> mean over T, or the first (class) token with ``token_pool="cls"``;
    packed sequences -> mean over each sequence's valid steps. Tensors with 4+ dims are always
    read as channels first. ``mask`` (an attention mask [N, T], nonzero on real tokens): the
    mean of a token sequence of that length covers the real tokens only.
    """
    x = first_tensor(value)
    if isinstance(x, PackedSequence):
        padded, lengths = pad_packed_sequence(x, batch_first=True)
        if token_pool == "cls":
            return padded[:, 0].float()
        return padded.float().sum(1) / lengths.to(padded.device, torch.float32)[:, None]
    if x.ndim == 0:
        raise TypeError("cannot capture a 0-d tensor: a captured layer needs a batch dimension")
    x = x.float()
    if x.ndim <= 2:
        return x.reshape(x.shape[0], -1)
    if x.ndim >= 4 or layout == "channels":
        return x.flatten(2).mean(2)
    if layout == "tokens_seq_first":
        x = x.transpose(0, 1)
    if token_pool == "cls":
        return x[:, 0]
    if mask is not None and tuple(mask.shape) == tuple(x.shape[:2]):
        weights = (mask != 0).to(x.dtype)[:, :, None]
        return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return x.mean(1)


def unit_view(value: Any, layout: str) -> tuple[torch.Tensor, int]:
    """``(tensor, axis)``: every value of the layer, without a copy, and the axis of its units
    (channels or features). Moving that axis last and flattening the rest gives the unit matrix
    (rows = samples x positions, columns = units) that the statistics are defined on."""
    x = first_tensor(value)
    if isinstance(x, PackedSequence):
        return x.data.reshape(x.data.shape[0], -1), 1
    if x.ndim <= 2:
        return x.reshape(x.shape[0], -1), 1
    if x.ndim >= 4 or layout == "channels":
        return x, 1
    return x, x.ndim - 1


class LayerCaptureError(RuntimeError):
    """A captured layer produced something that cannot be pooled; the message names the layer."""


IDLE, STATS, PROBE = 0, 1, 2


class LayerTap:
    """The hook of one captured layer, registered only while armed, so that a training step
    without activation statistics pays nothing for it. Armed for one training forward
    (``STATS``: activation statistics, kept on the device in ``self.stats``, float32
    [len(STAT_NAMES)]) or for probe chunks (``PROBE``: pooled, possibly projected, features
    appended to ``self.features``, float32 [chunk, D])."""

    def __init__(self, spec: LayerSpec, module: nn.Module, *, token_pool: str, seed: int,
                 on_error: Callable[[str, BaseException], None]) -> None:
        self.spec, self.module, self.token_pool = spec, module, token_pool
        self.mode = IDLE
        self.stats: torch.Tensor | None = None
        self.stats_seconds = 0.0  # time the last statistics took in the hook
        self.features: list[torch.Tensor] = []
        #: the probe chunk's attention mask [chunk, T] while a chunk with one runs, else None.
        self.mask: torch.Tensor | None = None
        #: pooled width before any projection; known after the first probe forward.
        self.dim: int | None = None
        self.projection: RandomProjection | None = None
        self._seed = (seed * 1_000_003 + zlib.crc32(spec.name.encode())) % (1 << 62)
        self._bounds = None if spec.on_input else saturation_bounds(module)
        self._on_error = on_error
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def arm(self, mode: int) -> None:
        """Collect on the next call(s) (``STATS`` or ``PROBE``); registers the hook if needed."""
        self.mode = mode
        if mode == STATS:
            self.stats = None
        if self._handle is None:
            self._handle = (
                self.module.register_forward_pre_hook(self._on_input, with_kwargs=True)
                if self.spec.on_input else self.module.register_forward_hook(self._on_output))

    def disarm(self) -> None:
        """Go idle and remove the hook from the module."""
        self.mode = IDLE
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_input(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.mode != IDLE:
            self._take(args[0] if args else next(iter(kwargs.values()), None))

    def _on_output(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self.mode != IDLE:
            self._take(output)

    def _take(self, value: Any) -> None:
        mode = self.mode
        if mode == STATS and not torch.is_grad_enabled():
            return  # an evaluation pass between steps: wait for the training forward
        self.mode = IDLE  # first call only (a module reused within one forward counts once)
        try:
            with torch.no_grad():
                if mode == PROBE:
                    self.features.append(self._probe_features(value))
                else:
                    start = time.perf_counter()
                    pooled = pool_features(value, self.spec.layout, self.token_pool)
                    units, unit_dim = unit_view(value, self.spec.layout)
                    self.stats = activation_stats(units, pooled, self._bounds, unit_dim)
                    self.stats_seconds = time.perf_counter() - start
        except Exception as exc:
            if mode == PROBE:
                raise LayerCaptureError(f"layer {self.spec.name!r}: {exc}") from exc
            self._on_error(f"activation statistics of layer {self.spec.name!r}", exc)

    def _probe_features(self, value: Any) -> torch.Tensor:
        pooled = pool_features(value, self.spec.layout, self.token_pool, self.mask)
        if self.dim is None:
            self.dim = pooled.shape[1]
            if self.dim > MAX_FEATURE_DIM:
                self.projection = RandomProjection(self.dim, PROJECTED_DIM, self._seed)
        if pooled.shape[1] != self.dim:
            raise ValueError(f"width changed from {self.dim} to {pooled.shape[1]}")
        return self.projection(pooled) if self.projection is not None else pooled

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for the run config."""
        return {"name": self.spec.name, "module": self.spec.module_name,
                "hook": "input" if self.spec.on_input else "output",
                "layout": self.spec.layout,
                "dim": PROJECTED_DIM if self.projection is not None else self.dim,
                "projected_from": self.dim if self.projection is not None else None,
                "projection": ({"kind": "gaussian", "dim": PROJECTED_DIM, "seed": self._seed}
                               if self.projection is not None else None)}
