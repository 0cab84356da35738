"""Measuring and controlling activation sparsity, where the units are channels and active sites.

Measures (the seeds' activation ratio and Hoyer sparsity), exact-sparsity controls (k-winners-
take-all over each site's channels; top-k pruning of a layer's output sites), and penalties to
train with (L1, Hoyer-square).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from backbones.sparse_modules import SparseModule
from voxelize.sparse_tensor import SparseTensor

# A float32 sum of ones is exact while it stays below 2**24; chunks of 2**23 keep it there.
_EXACT_CHUNK = 1 << 23


def activation_statistics(x: torch.Tensor, non_negative: bool = False) -> tuple[float | None, float | None]:
    """(activation ratio, Hoyer sparsity) of ``x`` — see :func:`activation_ratio` and
    :func:`hoyer_sparsity` — in three vectorised passes (the meter calls it on every activation).
    ``non_negative``: the caller knows x >= 0 (after a ReLU), which spares computing |x|."""
    n = x.numel()
    if n == 0:
        return None, None
    flat = x.detach().reshape(-1)
    magnitudes = flat if non_negative else flat.abs()
    l2 = float(torch.linalg.vector_norm(flat, 2))
    if math.isfinite(l2):
        # sign().sum() counts many times faster than torch.count_nonzero on CPU (but maps NaN to 0).
        nonzero = sum(int(torch.sign(chunk).sum()) for chunk in magnitudes.split(_EXACT_CHUNK))
    else:
        nonzero = int(torch.count_nonzero(flat))
    if n < 2 or l2 == 0.0:
        return nonzero / n, None
    l1 = float(magnitudes.sum())
    return nonzero / n, (math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)


def activation_ratio(x: torch.Tensor) -> float | None:
    """Fraction of non-zero elements of ``x``; None for an empty tensor."""
    return activation_statistics(x)[0]


def hoyer_sparsity(x: torch.Tensor) -> float | None:
    """H(x) = (sqrt(n) - |x|_1 / |x|_2) / (sqrt(n) - 1) over all n elements: 0 when every element
    has the same magnitude, 1 when one element carries everything. None when undefined (n < 2 or
    x all zeros)."""
    return activation_statistics(x)[1]


class KWinnersTakeAll(nn.Module):
    """Keeps the k largest values of each row (site) of (N, C) features and zeroes the rest.

    With continuous inputs exactly k values per site stay non-zero (a kept value that happens to be
    exactly 0 stays 0). Gradients flow to the kept values only.
    """

    def __init__(self, k: int):
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"k-WTA needs k >= 1, got {k}")
        self.k = int(k)

    def extra_repr(self) -> str:
        return f"k={self.k}"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[1] < self.k:
            raise ValueError(f"k-WTA with k={self.k} on {features.shape[1]} channels")
        values, indices = features.topk(self.k, dim=1)
        return torch.zeros_like(features).scatter(1, indices, values)


# The activation modules of a sparse backbone: their outputs are a layer's features "after the
# activation", for the densification meter and the activation penalties alike.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, KWinnersTakeAll)


class SiteTopK(SparseModule):
    """Keeps the highest-magnitude output sites of each batch sample, the exact-sparsity control
    applied to sites (as SPS-Conv prunes a regular conv's outputs).

    Args:
        k: sites to keep per sample (all when a sample has fewer), or
        fraction: share of each sample's sites to keep (rounded up), in (0, 1].
    Magnitude is the L2 norm of a site's feature vector; ties go to the lower row. The kept sites
    stay in their original (canonical) order.
    """

    def __init__(self, k: int | None = None, fraction: float | None = None):
        super().__init__()
        if (k is None) == (fraction is None):
            raise ValueError("SiteTopK needs exactly one of k and fraction")
        if k is not None and int(k) < 1:
            raise ValueError(f"SiteTopK k must be >= 1, got {k}")
        if fraction is not None and not 0.0 < fraction <= 1.0:
            raise ValueError(f"SiteTopK fraction must lie in (0, 1], got {fraction}")
        self.k, self.fraction = (int(k) if k is not None else None), fraction

    def extra_repr(self) -> str:
        return f"k={self.k}" if self.k is not None else f"fraction={self.fraction}"

    def kept_rows(self, x: SparseTensor) -> torch.Tensor:
        """(M,) ascending rows of the sites to keep."""
        batch = x.coords[:, 0].long()
        counts = torch.bincount(batch, minlength=x.batch_size)
        if self.k is not None:
            keep = counts.clamp_max(self.k)
        else:
            keep = torch.ceil(counts.double() * self.fraction).long()
        if bool((keep == counts).all()):
            return torch.arange(x.num_sites, device=x.device)
        magnitude = torch.linalg.vector_norm(x.features.detach().float(), dim=1)
        # Rank sites within their sample by magnitude: sort by (sample, -magnitude), stable.
        order = torch.sort(-magnitude, stable=True).indices
        order = order.index_select(0, torch.sort(batch.index_select(0, order), stable=True).indices)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(x.num_sites, device=x.device) - starts.index_select(0, batch.index_select(0, order))
        chosen = order[rank < keep.index_select(0, batch.index_select(0, order))]
        return torch.sort(chosen).values

    def forward(self, x: SparseTensor) -> SparseTensor:
        rows = self.kept_rows(x)
        if rows.numel() == x.num_sites:
            return x
        return SparseTensor(x.features.index_select(0, rows), x.coords.index_select(0, rows), x.spatial_shape,
                            x.batch_size, x.tensor_stride, x.kernel_map_cache, check=False)


def l1_activation_penalty(activations: list[torch.Tensor]) -> torch.Tensor:
    """Mean absolute activation over all given (N, C) feature tensors (scale-dependent)."""
    total = sum(a.abs().sum() for a in activations)
    count = sum(a.numel() for a in activations)
    return total / max(count, 1)


def hoyer_square_penalty(activations: list[torch.Tensor], eps: float = 1e-12,
                         per_element: bool = False) -> torch.Tensor:
    """Sum over tensors of |x|_1^2 / |x|_2^2 (Hoyer-square, DeepHoyer): scale-invariant, between 1
    (one non-zero) and n (all equal); lower is sparser.

    ``per_element``: each tensor's term is divided by its element count n, giving a value in
    [1/n, 1] (an effective density: 1 when all elements are equally active), and the terms are
    averaged over the tensors — so the penalty, and the weight it needs, do not grow with the
    number of sites or layers."""
    terms = [a.abs().sum().square() / (a.square().sum() + eps) for a in activations]
    if not per_element:
        return sum(terms)
    return sum(t / max(a.numel(), 1) for t, a in zip(terms, activations)) / max(len(terms), 1)
