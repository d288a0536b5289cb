"""The telemetry vector is bit-identical to a plain computation of its definition.

The reference below computes every value from the parameters and gradients one tensor at a time,
with the same float32 reductions as the definition (per-tensor 2-norms, per-layer root of summed
squares in parameter order, the update-to-weight ratio, the cosine of the gradient samples), laid
out by the signal registry. ParamTelemetry's shortcuts (norms noted by the clip watch, batched
copies into sample buffers) must not change a single bit.
"""

import math

import pytest
import torch
from torch import nn

from sentrycam.capture.param_telemetry import COS_EPS, LAYER_STATS, ParamTelemetry
from sentrycam.protocol.signals import (GRAD_COS, GRAD_NORM, LAYER_GRAD_NORM, LAYER_UPDATE_RATIO,
                                        TELEMETRY_SCALARS, UPDATE_RATIO, WEIGHT_NORM)


def norms(tensors):
    """float32 [P]: each tensor's 2-norm, one reduction per tensor."""
    return torch.stack([torch.linalg.vector_norm(t, 2, dtype=torch.float32) for t in tensors])


def per_layer(values, owners, layers):
    """float32 [L]: root of the summed squares of ``values`` [P] per owning layer."""
    squares = torch.zeros(layers).index_add_(0, owners, values.square())
    return squares.sqrt()


def reference(before, after, grads, previous_grads, owners, layers, unclipped):
    """The telemetry vector of one step from its weights before and after, and gradients."""
    nan = torch.tensor(math.nan)
    grad_norms, weight = norms(grads), per_layer(norms(before), owners, layers)
    update = [b - a for b, a in zip(before, after)]
    moved = per_layer(norms(update), owners, layers)
    ratio_den = weight.square().sum().sqrt()
    flat = torch.cat([g.reshape(-1) for g in grads])
    cosine = nan
    if previous_grads is not None:
        old = torch.cat([g.reshape(-1) for g in previous_grads])
        cosine = torch.dot(flat, old) / (torch.linalg.vector_norm(flat)
                                         * torch.linalg.vector_norm(old)).clamp_min(COS_EPS)
    head = {GRAD_NORM.name: torch.linalg.vector_norm(grad_norms), GRAD_COS.name: cosine,
            UPDATE_RATIO.name: torch.where(ratio_den > 0, moved.square().sum().sqrt()
                                           / ratio_den, nan)}
    rows = {LAYER_GRAD_NORM.name: per_layer(grad_norms, owners, layers), WEIGHT_NORM.name: weight,
            LAYER_UPDATE_RATIO.name: torch.where(weight > 0, moved / weight, nan)}
    return torch.cat([torch.stack([head[name] for name in TELEMETRY_SCALARS])]
                     + [rows[name] for name in LAYER_STATS]
                     + [(unclipped if unclipped is not None else nan).reshape(1)])


def bits(vector):
    return vector.view(torch.int32).tolist()


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("noted", [True, False], ids=["noted-norms", "fresh-norms"])
def test_the_vector_is_bit_identical_to_its_definition(make_model, data, kind, noted):
    model = make_model(kind)
    x, y = data(kind)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    telemetry = ParamTelemetry(model, clip_due=None if noted else (lambda: False))
    params = telemetry._params
    owners = torch.tensor([telemetry.layers.index(name) for name in owner_names(model, telemetry)])
    gen = torch.Generator().manual_seed(0)
    previous = None
    for step in range(6):
        idx = torch.randint(0, len(y), (32,), generator=gen)
        optimizer.zero_grad()
        criterion(model(x[idx]), y[idx]).backward()
        unclipped = None
        if step == 3:  # a clipped step: the norm before clipping is the vector's last value
            unclipped = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
        before = [p.detach().clone() for p in params]
        grads = [p.grad.clone() for p in params]
        telemetry.before_step()
        optimizer.step()
        got = telemetry.after_step()
        want = reference(before, [p.detach() for p in params], grads, previous, owners,
                         len(telemetry.layers), unclipped if noted else None)
        assert bits(got) == bits(want), f"step {step}"
        previous = grads
    telemetry.close()


def owner_names(model, telemetry):
    """The owning layer's name of each of ``telemetry``'s parameters, found independently."""
    by_id = {id(p): (name or "(model)") for name, module in model.named_modules()
             for p in module.parameters(recurse=False)}
    return [by_id[id(p)] for p in telemetry._params]
