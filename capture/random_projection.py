"""Reducing wide pooled features: a fixed, seeded Gaussian random projection.

A captured layer whose pooled width exceeds ``MAX_FEATURE_DIM`` is stored projected to
``PROJECTED_DIM`` columns (distances are kept approximately, Johnson-Lindenstrauss), so a
snapshot of a very wide layer stays small.
"""

from __future__ import annotations

import torch

#: Pooled layers wider than this are reduced with a random projection to ``PROJECTED_DIM``.
MAX_FEATURE_DIM = 4096
PROJECTED_DIM = 1024


class RandomProjection:
    """A fixed Gaussian random projection [N, D] -> [N, k] (entries N(0, 1/k)), seeded locally.

    The matrix is drawn chunk by chunk from a private ``torch.Generator`` (never the global RNG)
    and cached on the device when it holds at most ``MAX_CACHED`` entries; wider layers redraw
    their chunks at each call, trading time for memory.
    """

    CHUNK_ROWS = 8192
    MAX_CACHED = 1 << 26

    def __init__(self, in_dim: int, out_dim: int, seed: int) -> None:
        self.in_dim, self.out_dim, self.seed = in_dim, out_dim, seed
        self._cache: dict[int, torch.Tensor] | None = (
            {} if in_dim * out_dim <= self.MAX_CACHED else None)

    def _chunk(self, index: int, rows: int, device: torch.device) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        gen = torch.Generator().manual_seed(self.seed + index)
        chunk = torch.randn(rows, self.out_dim, generator=gen) / self.out_dim ** 0.5
        chunk = chunk.to(device)
        if self._cache is not None:
            self._cache[index] = chunk
        return chunk

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.out_dim, device=x.device)
        for index, start in enumerate(range(0, self.in_dim, self.CHUNK_ROWS)):
            block = x[:, start:start + self.CHUNK_ROWS]
            out += block @ self._chunk(index, block.shape[1], x.device)
        return out
