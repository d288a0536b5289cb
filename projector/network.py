"""The GN-BN parametric autoencoder: features [B, D] -> 2D [B, 2] -> features [B, D].

The first hidden layer of the encoder and of the decoder normalises with GroupNorm (8 groups,
no affine) followed by BatchNorm (affine). GroupNorm normalises each sample on its own, so a
batch that mixes points of the new snapshot with anchored points of older ones cannot drag the
statistics of one onto the other; BatchNorm after it keeps the training speed of batch
statistics. The network is fine-tuned snapshot after snapshot, which is why this "continual"
normalisation matters.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Default widths between the input and the 2D code (the decoder mirrors them).
DEFAULT_HIDDEN = (256, 128, 64, 32)
GROUPS = 8


def _mlp(widths: Sequence[int], *, first_normalised: bool) -> nn.Sequential:
    """Linear layers through ``widths`` with SiLU between; the first hidden layer GN-BN'd."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(width_in, width_out))
        last = index == len(widths) - 2
        if last:
            break
        if index == 0 and first_normalised:
            layers.append(nn.GroupNorm(_groups(width_out), width_out, affine=False))
            layers.append(nn.BatchNorm1d(width_out, affine=True))
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _groups(width: int) -> int:
    """8 groups where the width allows it, else the largest divisor of ``width`` below 8."""
    return next(g for g in range(min(GROUPS, width), 0, -1) if width % g == 0)


class GNBNAutoencoder(nn.Module):
    """Encoder D -> hidden... -> 2 and mirrored decoder 2 -> ...hidden -> D."""

    def __init__(self, input_dim: int, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        self.input_dim = int(input_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.encoder = _mlp((self.input_dim, *self.hidden, 2), first_normalised=True)
        self.decoder = _mlp((2, *reversed(self.hidden), self.input_dim), first_normalised=True)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """features float32 [B, D] -> coords float32 [B, 2]."""
        return self.encoder(features)

    def decode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords float32 [B, 2] -> reconstructed (scaled) features float32 [B, D]."""
        return self.decoder(coords)
