"""Failures the scenario benchmark injects at a known step (kinds and families: scenario_plan.py).

An :class:`Injection` is called by the training loop around each step: ``at_start`` once at
the injected step, ``batch`` may rewrite a batch, ``lr_factor`` multiplies the scheduled
learning rate, ``before_step`` acts between backward and the optimizer step, ``train_subset``
restricts the data to a small fixed subset.
"""

from __future__ import annotations

import torch
from torch import nn

from scenario_models import Task

#: Learning-rate factor per kind, as a function of the steps since the injection.
LR_FACTORS = {
    "lr_spike": lambda since: 25.0,
    "slow_divergence": lambda since: 1.025 ** (since + 1),
    "lr_too_small": lambda since: 1e-3,
    "lr_blowup": lambda since: 1e4,  # under SGD: non-finite losses within a few steps
}
#: Gradient norm that ``heavy_clipping`` clips to: about 1/1000 of these nets' usual norm.
CLIP_TO = 1e-3
#: Factor ``attention_collapse`` scales the attention logits of every attention module by,
#: over QUERY_RAMP steps: the query and the key projections each grow by its square root (log
#: scale growing with the square of the time, so that the weights' growth rate rises smoothly,
#: as logit growth does), and each head's softmax saturates onto one key.
QUERY_SCALE, QUERY_RAMP = 30.0, 120


def _vanish(grad: torch.Tensor) -> torch.Tensor:
    return grad * 1e-6


def _logit_scale(since: int) -> float:
    return QUERY_SCALE ** (min(since, QUERY_RAMP) / QUERY_RAMP) ** 2


def _scale_logits(model: nn.Module, factor: float) -> None:
    """Multiply the query and key projections (weights and biases) of every
    nn.MultiheadAttention by sqrt(``factor``): its attention logits by ``factor``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.MultiheadAttention):  # q, k, v rows packed in in_proj
                query_key = slice(0, 2 * module.embed_dim)
                module.in_proj_weight[query_key] *= factor ** 0.5
                module.in_proj_bias[query_key] *= factor ** 0.5


class Injection:
    """The failure ``kind`` (``healthy``: none) injected from step ``at`` on."""

    def __init__(self, kind: str, at: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                 task: Task, seed: int) -> None:
        self.kind, self.at, self.model, self.optimizer, self.task = kind, at, model, optimizer, task
        self.rng = torch.Generator().manual_seed(seed + 77)
        self.repeated: tuple[torch.Tensor, torch.Tensor] | None = None

    def active(self, step: int) -> bool:
        return self.kind != "healthy" and step >= self.at

    def lr_factor(self, step: int) -> float:
        factor = LR_FACTORS.get(self.kind)
        return factor(step - self.at) if factor is not None and self.active(step) else 1.0

    def batch(self, step: int, xb: torch.Tensor, yb: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active(step):
            return xb, yb
        rewrite = getattr(self, f"_batch_{self.kind}", None)
        return rewrite(xb, yb) if rewrite is not None else (xb, yb)

    def _batch_label_noise(self, xb, yb):
        flip = torch.rand(len(yb), generator=self.rng) < 0.6
        random = torch.randint(0, self.task.n_classes, (len(yb),), generator=self.rng)
        return xb, torch.where(flip, random, yb)

    def _batch_class_swap(self, xb, yb):
        swapped = torch.where(yb == 0, 1, torch.where(yb == 1, 0, yb))
        return xb, swapped

    def _batch_forgetting(self, xb, yb):  # task B: only the upper half of the classes
        return self._keep(xb, yb, yb >= self.task.n_classes // 2)

    def _batch_class_switch(self, xb, yb):  # task B: only the lowest third of the classes
        return self._keep(xb, yb, yb < max(2, self.task.n_classes // 3))

    @staticmethod
    def _keep(xb, yb, keep):
        return (xb[:0], yb[:0]) if keep.sum() < 4 else (xb[keep], yb[keep])

    def _batch_repeating_loader(self, xb, yb):
        if self.repeated is None:
            self.repeated = (xb, yb)
        return self.repeated

    def _batch_input_drift(self, xb, yb):
        if self.task.vocab:  # every token id moves to its neighbour
            return (xb + 1) % self.task.vocab, yb
        return xb * 1.5 + 1.0, yb

    def _batch_noisy_inputs(self, xb, yb):
        noisy = torch.rand(xb.shape, generator=self.rng) < 0.5
        if self.task.vocab:
            random = torch.randint(0, self.task.vocab, xb.shape, generator=self.rng)
        else:
            random = torch.randn(xb.shape, generator=self.rng) * 2.0
        return torch.where(noisy, random, xb), yb

    def at_start(self, step: int) -> None:
        if step != self.at:
            return
        if self.kind == "dead_units":
            with torch.no_grad():
                layer = self.model.hidden_linear()
                n = layer.bias.numel()
                dead = torch.randperm(n, generator=self.rng)[: int(0.7 * n)]
                layer.bias[dead] -= 50.0
        elif self.kind == "weight_corruption":
            with torch.no_grad():
                layer = self.model.hidden_linear()
                layer.weight.add_(torch.randn(layer.weight.shape, generator=self.rng)
                                  * 4.0 * layer.weight.std())
        elif self.kind == "optimizer_corruption":
            for state in self.optimizer.state.values():
                if "exp_avg_sq" in state:
                    state["exp_avg_sq"].mul_(1e-5)
        elif self.kind == "vanishing_gradients":
            # Scaled as backward computes them, as vanishing gradients arise: an in-place change
            # after backward would read to capture as clipping (the norm before it is recorded).
            for p in self.model.parameters():
                p.register_hook(_vanish)

    def before_step(self, step: int) -> None:
        if self.kind == "heavy_clipping" and self.active(step):
            nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_TO)
        elif self.kind == "attention_collapse" and self.active(step):
            since = step - self.at
            _scale_logits(self.model, _logit_scale(since + 1) / _logit_scale(since))

    def train_subset(self, step: int) -> bool:
        """Overfitting: from ``at`` on, training sees only a small fixed subset."""
        return self.kind == "overfitting" and self.active(step)
