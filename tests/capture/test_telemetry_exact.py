"""The telemetry vector is bit-identical to a plain computation of its definition.

The reference below computes every value from the parameters and gradients one tensor at a time,
with the same float32 reductions as the definition (per-tensor 2-norms, per-layer root of summed
squares in parameter order, the update-to-weight ratio, the cosine of the gradient samples), laid
out by the signal registry. ParamTelemetry's shortcuts (batched norms and stacks written in
place, kept constants) must not change a single bit.
"""

import math

import pytest
import torch
from torch import nn

from sentrycam.capture.layers import ROOT_NAME
from sentrycam.capture.param_telemetry import COS_EPS, LAYER_STATS, ParamTelemetry
from sentrycam.protocol.signals import (GRAD_COS, GRAD_NORM, LAYER_GRAD_NORM, LAYER_UPDATE_RATIO,
                                        TELEMETRY_SCALARS, UPDATE_RATIO, WEIGHT_NORM)


def norms(tensors):
    """float32 [P]: each tensor's 2-norm, one reduction per tensor."""
    return torch.stack([torch.linalg.vector_norm(t, 2, dtype=torch.float32) for t in tensors])


def per_layer(values, owners, layers):
    """float32 [L]: root of the summed squares of ``values`` [P] per owning layer ``owners``
    [P] (int64), NaN for a layer that owns none of them."""
    squares = torch.zeros(layers).index_add_(0, owners, values.square()).sqrt()
    owned = torch.zeros(layers, dtype=torch.bool)
    owned[owners] = True
    return torch.where(owned, squares, torch.tensor(math.nan))


def sampled(tensors, stride):
    """Every ``stride``-th element of each tensor, each as a contiguous float32 [size_i]."""
    return [t.reshape(-1)[::stride].contiguous() for t in tensors]


def reference(before, after, grads, previous, owners, layers, unclipped, stride):
    """The telemetry vector of one step from the weights before and after it and the gradients
    (None for a parameter without one); ``previous``: the last step's gradient sample."""
    nan = torch.tensor(math.nan)
    present = [i for i, g in enumerate(grads) if g is not None]
    grad_norms = norms([grads[i] for i in present])
    weight = per_layer(norms(before), owners, layers)
    size = per_layer(norms(sampled(before, stride)), owners, layers)
    moved = per_layer(norms([b - a for b, a in zip(sampled(before, stride),
                                                   sampled(after, stride))]), owners, layers)
    sample = torch.cat([torch.zeros(math.ceil(b.numel() / stride)) if g is None else piece
                        for b, g, piece in zip(before, grads, sampled(
                            [g if g is not None else b for b, g in zip(before, grads)],
                            stride))])
    cosine = nan
    if previous is not None:
        cosine = torch.dot(sample, previous) / (torch.linalg.vector_norm(sample)
                                                * torch.linalg.vector_norm(previous)
                                                ).clamp_min(COS_EPS)
    old_norm = size.square().sum().sqrt()
    head = {GRAD_NORM.name: torch.linalg.vector_norm(grad_norms), GRAD_COS.name: cosine,
            UPDATE_RATIO.name: torch.where(old_norm > 0, moved.square().sum().sqrt()
                                           / old_norm, nan)}
    rows = {LAYER_GRAD_NORM.name: per_layer(grad_norms, owners[present], layers),
            WEIGHT_NORM.name: weight,
            LAYER_UPDATE_RATIO.name: torch.where(size > 0, moved / size, nan)}
    vector = torch.cat([torch.stack([head[name] for name in TELEMETRY_SCALARS])]
                       + [rows[name] for name in LAYER_STATS]
                       + [(unclipped if unclipped is not None else nan).reshape(1)])
    return vector, sample


def bits(vector):
    return vector.view(torch.int32).tolist()


#: (model, sample stride, a parameter left without gradients, gradients unscaled in place by
#: a GradScaler, which leaves their version counters alone)
CASES = {"mlp": ("mlp", 1, False, False), "cnn": ("cnn", 1, False, False),
         "cnn-sampled": ("cnn", 3, False, False), "mlp-frozen": ("mlp", 1, True, False),
         "mlp-scaled": ("mlp", 1, False, True)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_vector_is_bit_identical_to_its_definition(make_model, data, case):
    kind, stride, frozen, scaled = CASES[case]
    model = make_model(kind)
    x, y = data(kind)
    if frozen:  # a layer whose weight (not bias) has no gradient: a partial per-layer sum
        next(model.parameters()).requires_grad_(False)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                                momentum=0.9)
    total = sum(p.numel() for p in model.parameters())
    telemetry = ParamTelemetry(model, sample_limit=math.ceil(total / stride))
    params = telemetry._params
    owners = torch.tensor([telemetry.layers.index(name) for name in owner_names(model, telemetry)])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    gen = torch.Generator().manual_seed(0)
    previous = None
    for step in range(6):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        optimizer.zero_grad()
        loss = criterion(model(x[idx]), y[idx])
        if scaled:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        unclipped = None
        if step == 3 and not scaled:  # a clipped step: the norm before clipping is the last
            # value (with a scaler, only its own step() tells the scale: test_clipping.py)
            unclipped = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        before = [p.detach().clone() for p in params]
        grads = [None if p.grad is None else p.grad.clone() for p in params]
        telemetry.before_step()
        optimizer.step()
        got = telemetry.after_step()
        if scaled:
            scaler.update()
        want, previous = reference(before, [p.detach() for p in params], grads, previous, owners,
                                   len(telemetry.layers), unclipped, stride)
        assert bits(got) == bits(want), f"step {step}"
    telemetry.close()


def owner_names(model, telemetry):
    """The owning layer's name of each of ``telemetry``'s parameters, found independently."""
    by_id = {id(p): (name or ROOT_NAME) for name, module in model.named_modules()
             for p in module.parameters(recurse=False)}
    return [by_id[id(p)] for p in telemetry._params]
