"""Kernel maps: which input row feeds which output row through which kernel offset.

Offsets are numbered as spconv numbers them and as the weight layout ``[C_out, kD, kH, kW, C_in]``
stores them: ``k = (kz * kH + ky) * kW + kx``. The operation is cross-correlation, like
``torch.nn.functional.conv3d``:

- regular conv: output site ``o`` reads input site ``i = o * stride - padding + k * dilation``
  (per axis); the outputs are every site that reads at least one active input, in canonical
  order: ascending linearised key ``((b * D + z) * H + y) * W + x`` of the output grid.
  Output grid: ``floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``.
- submanifold conv: the outputs are the inputs (same rows, same order); output site ``o`` reads
  ``i = o + (k - kernel // 2) * dilation``, i.e. a "same" convolution evaluated at the active sites.
- inverse conv: the transpose of a paired regular conv, found by its indice key: pairs swapped,
  outputs = that conv's input sites in their order.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
from dataclasses import dataclass

import torch

from voxelize.hash_map import ABSENT
from voxelize.sparse_tensor import SparseTensor


def triple(value, name: str) -> tuple[int, int, int]:
    """An int or a 3-sequence as a (z, y, x) tuple of ints."""
    values = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{name} must be an int or three ints (z, y, x), got {value!r}")
    return values


@dataclass
class KernelMap:
    """Pairs of (input row, output row) per kernel offset, concatenated offset by offset.

    in_rows, out_rows: (P,) int64; the pairs of offset k are rows ``starts[k]:starts[k+1]``,
        sorted by output row (an output row appears at most once per offset). Scattering in
        output order is 20-30% faster than in input order.
    pair_counts: (K,) pair count per offset, as Python ints (the conv loop needs no device sync).
    identity_offset: an offset whose pairs are exactly row i → row i for every i (the centre of a
        submanifold map), which the conv applies without gather or scatter; None if there is none.
    num_in, num_out: input and output rows.
    out_coords, out_spatial_shape: the output sites (the input's own for submanifold maps).
    in_coords, in_spatial_shape: the input sites (kept so an inverse conv can restore them).
    """
    in_rows: torch.Tensor
    out_rows: torch.Tensor
    pair_counts: list[int]
    identity_offset: int | None
    num_in: int
    num_out: int
    kernel_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    in_coords: torch.Tensor
    in_spatial_shape: tuple[int, int, int]
    out_coords: torch.Tensor
    out_spatial_shape: tuple[int, int, int]

    @property
    def kernel_volume(self) -> int:
        return len(self.pair_counts)

    @property
    def num_pairs(self) -> int:
        """True number of (input, output, offset) triples, identity pairs included."""
        return sum(self.pair_counts)

    @functools.cached_property
    def offset_pairs(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(offset, in_rows, out_rows) of each offset with pairs, identity pairs excluded."""
        pairs, start = [], 0
        for offset, count in enumerate(self.pair_counts):
            if count and offset != self.identity_offset:
                pairs.append((offset, self.in_rows[start:start + count], self.out_rows[start:start + count]))
            start += count
        return pairs

    def transposed(self) -> "KernelMap":
        """The inverse map: outputs become inputs, same offsets."""
        return dataclasses.replace(self, in_rows=self.out_rows, out_rows=self.in_rows, num_in=self.num_out,
                                   num_out=self.num_in, in_coords=self.out_coords,
                                   in_spatial_shape=self.out_spatial_shape, out_coords=self.in_coords,
                                   out_spatial_shape=self.in_spatial_shape)


def conv_output_shape(spatial_shape, kernel_size, stride, padding, dilation) -> tuple[int, int, int]:
    """Output grid of a regular conv, as ``torch.nn.functional.conv3d`` computes it."""
    shape = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                  for n, k, s, p, d in zip(spatial_shape, kernel_size, stride, padding, dilation))
    if min(shape) < 1:
        raise ValueError(f"conv with kernel {kernel_size}, stride {stride}, padding {padding}, dilation "
                         f"{dilation} leaves no output on a grid of {tuple(spatial_shape)}")
    return shape


def _pairs_from_matrix(rows: torch.Tensor, out_of: torch.Tensor | None = None):
    """From a (K, N) matrix of input rows (-1 = none) for output rows, pairs sorted by offset.

    Column j of row k says: output ``out_of[j]`` (or j) reads input ``rows[k, j]`` via offset k.
    """
    offset, column = (rows >= 0).nonzero(as_tuple=True)
    in_rows = rows[offset, column].long()
    out_rows = column if out_of is None else out_of.index_select(0, column)
    counts = torch.bincount(offset, minlength=rows.shape[0]).tolist()
    return in_rows, out_rows, counts


def _sorted_by_output(in_rows: torch.Tensor, out_rows: torch.Tensor, counts: list[int], num_out: int,
                      offset: torch.Tensor | None = None):
    """Reorder pairs grouped by offset so that within each offset they ascend by output row. ``offset``:
    each pair's offset, if the caller has it (else it is rebuilt from ``counts``)."""
    if offset is None:
        offset = torch.repeat_interleave(torch.arange(len(counts), device=in_rows.device),
                                         torch.tensor(counts, dtype=torch.int64, device=in_rows.device))
    # Pairs from inputs in canonical order (every regular conv's output) already ascend: a linear
    # check spares the sort.
    if out_rows.numel() < 2 or bool(((out_rows[1:] > out_rows[:-1]) | (offset[1:] != offset[:-1])).all()):
        return in_rows, out_rows
    order = torch.argsort(offset * num_out + out_rows)
    return in_rows.index_select(0, order), out_rows.index_select(0, order)


# Submanifold maps look neighbours up in a dense int32 grid of row ids (one cell per site of the
# whole batch grid) when it takes at most this many bytes, else in the tensor's hash map. The grid
# built the nuScenes stride-1 map ~2x faster than the hash map (issue 14; a prototype measured
# 2.4-3.9x on a quiet machine) and needs no hash map built for the tensor. It is allocated once per
# process (and kept: :func:`release_dense_grid` frees it) and reset cell by cell after each use,
# because a fresh grid of this size costs more in page faults than the whole lookup.
DENSE_GRID_MAX_BYTES = 512 * 2**20


class _IndexGrid:
    """A process-wide int32 buffer of row ids, -1 everywhere between uses (see DENSE_GRID_MAX_BYTES)."""

    def __init__(self):
        self._cells: dict[torch.device, torch.Tensor] = {}
        self._lock = threading.Lock()

    def absent_key(self, num_cells: int, device) -> int:
        """A key past ``num_cells`` whose cell stays -1: what an absent neighbour is looked up as (so the
        lookup needs no masking pass). Allocates the grid for ``num_cells`` if needed."""
        with self._lock:
            grid = self._cells.get(torch.device(device))
            if grid is None or grid.numel() <= num_cells:
                self._cells.pop(torch.device(device), None)  # free the old one before the new one
                grid = torch.full((num_cells + 1,), -1, dtype=torch.int32, device=device)
                self._cells[torch.device(device)] = grid
            return grid.numel() - 1

    def neighbour_rows(self, keys: torch.Tensor, neighbour_keys: torch.Tensor) -> torch.Tensor:
        """(..., ) int32 row of each neighbour key (-1: absent), for the sites with ``keys`` (N,) int64 in
        rows 0..N-1; ``neighbour_keys`` int64, each a site key or :meth:`absent_key`'s."""
        with self._lock:
            grid = self._cells[keys.device]
            grid.index_copy_(0, keys, torch.arange(keys.numel(), dtype=torch.int32, device=keys.device))
            try:
                return grid.index_select(0, neighbour_keys.view(-1)).view(neighbour_keys.shape)
            finally:
                grid.index_fill_(0, keys, -1)

    def distinct_rows(self, keys: torch.Tensor, num_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the distinct keys ascending, each key's index among them) of int64 ``keys`` in [0, num_cells):
        what ``torch.unique(keys, sorted=True, return_inverse=True)`` returns, by marking the keys' cells
        and reading the marks back in grid order instead of sorting every key."""
        self.absent_key(num_cells, keys.device)
        with self._lock:
            grid = self._cells[keys.device]
            used = grid[:num_cells]
            used.index_fill_(0, keys, 0)
            distinct = (used == 0).nonzero().view(-1)
            try:
                used.index_copy_(0, distinct, torch.arange(distinct.numel(), dtype=torch.int32, device=keys.device))
                return distinct, used.index_select(0, keys).long()
            finally:
                used.index_fill_(0, distinct, -1)

    def release(self) -> None:
        """Free the buffers (they are rebuilt on the next use)."""
        with self._lock:
            self._cells.clear()


_INDEX_GRID = _IndexGrid()


def release_dense_grid() -> None:
    """Free the dense index grid of submanifold lookups (up to DENSE_GRID_MAX_BYTES per device); the
    next lookup allocates it again."""
    _INDEX_GRID.release()


def uses_dense_grid(tensor: SparseTensor) -> bool:
    """Whether submanifold maps of ``tensor`` are looked up in the dense index grid (else the hash map)."""
    return _fits_dense_grid(tensor.batch_size, tensor.spatial_shape)


def _fits_dense_grid(batch_size: int, spatial_shape) -> bool:
    return 4 * batch_size * math.prod(spatial_shape) <= DENSE_GRID_MAX_BYTES


def marks_output_grid(batch_size: int, out_shape, pairs: int) -> bool:
    """Whether a regular map finds its output sites by marking the dense grid (else by a sort): when the
    grid fits and has no more cells than there are pairs. Measured here (random int64 keys, 2 threads):
    5.2M cells / 8M pairs 208 ms marked vs 488 ms sorted; 21M / 2M 120 vs 71 ms; 92M / 1M 260 vs 37 ms."""
    return _fits_dense_grid(batch_size, out_shape) and batch_size * math.prod(out_shape) <= pairs


def build_submanifold_map(tensor: SparseTensor, kernel_size, dilation, dense_grid: bool | None = None) -> KernelMap:
    """Submanifold kernel map: outputs = the input sites; see the module docstring.

    ``dense_grid``: look neighbours up in the dense index grid (True) or the hash map (False); None
    chooses by :func:`uses_dense_grid`. Both give the same map.
    """
    kernel_size, dilation = triple(kernel_size, "kernel_size"), triple(dilation, "dilation")
    coords, n = tensor.coords, tensor.num_sites
    device = coords.device
    volume = math.prod(kernel_size)
    odd = all(k % 2 for k in kernel_size)
    dense_grid = uses_dense_grid(tensor) if dense_grid is None else dense_grid
    # For odd kernels offset k and its mirror K-1-k see each other: j = i + d  <=>  i = j - d.
    # With the hash map only the offsets before the centre are looked up and the mirror pairs are
    # the same pairs swapped (a sort); a dense-grid lookup is cheaper than that sort, so it looks up all.
    looked_up = volume // 2 if odd and not dense_grid else volume
    # A neighbour's key is the site's key plus the offset's linearised delta, when it stays in the grid.
    depth, height, width = tensor.spatial_shape
    keys = tensor.keys()
    in_grid = {}  # (axis, delta) -> (N,) bool
    for axis, extent in enumerate(tensor.spatial_shape):
        for k in range(kernel_size[axis]):
            delta = (k - kernel_size[axis] // 2) * dilation[axis]
            c = coords[:, 1 + axis]
            in_grid[axis, k] = (c >= -delta) & (c < extent - delta)
    neighbour_keys = torch.empty((looked_up, n), dtype=torch.int64, device=device)
    identity = volume // 2 if odd else None
    absent = _INDEX_GRID.absent_key(tensor.batch_size * depth * height * width, device) if dense_grid else ABSENT
    for offset, (kz, ky, kx) in enumerate(itertools.islice(itertools.product(*map(range, kernel_size)), looked_up)):
        if offset == identity:
            neighbour_keys[offset].fill_(absent)  # the centre is applied without a map
            continue
        dz, dy, dx = ((k - size // 2) * d for k, size, d in zip((kz, ky, kx), kernel_size, dilation))
        torch.add(keys, (dz * height + dy) * width + dx, out=neighbour_keys[offset])
        inside = in_grid[0, kz] & in_grid[1, ky] & in_grid[2, kx]
        neighbour_keys[offset].masked_fill_(~inside, absent)
    if dense_grid:
        rows = _INDEX_GRID.neighbour_rows(keys, neighbour_keys)
    else:
        rows = tensor.hash_map.query_keys(neighbour_keys.view(-1)).view(looked_up, n)
    in_rows, out_rows, counts = _pairs_from_matrix(rows)
    if odd:
        arange = torch.arange(n, device=device)
        starts = [0] + list(itertools.accumulate(counts))
        if dense_grid:  # splice the identity pairs in at the centre
            centre = starts[identity]
            in_rows = torch.cat([in_rows[:centre], arange, in_rows[centre:]])
            out_rows = torch.cat([out_rows[:centre], arange, out_rows[centre:]])
            counts[identity] = n
        else:
            mirrored = range(looked_up - 1, -1, -1)  # offset K-1-k, in increasing order
            mirror_in, mirror_out = _sorted_by_output(
                torch.cat([out_rows[starts[k]:starts[k + 1]] for k in mirrored] + [out_rows[:0]]),
                torch.cat([in_rows[starts[k]:starts[k + 1]] for k in mirrored] + [in_rows[:0]]), counts[::-1], n)
            in_rows, out_rows = torch.cat([in_rows, arange, mirror_in]), torch.cat([out_rows, arange, mirror_out])
            counts = counts + [n] + counts[::-1]
    shape = tensor.spatial_shape
    return KernelMap(in_rows=in_rows, out_rows=out_rows, pair_counts=counts, identity_offset=identity, num_in=n,
                     num_out=n, kernel_size=kernel_size, stride=(1, 1, 1),
                     padding=tuple(k // 2 * d for k, d in zip(kernel_size, dilation)), dilation=dilation,
                     in_coords=coords, in_spatial_shape=shape, out_coords=coords, out_spatial_shape=shape)


def build_regular_map(tensor: SparseTensor, kernel_size, stride, padding, dilation,
                      dense_grid: bool | None = None) -> KernelMap:
    """Regular (strided) kernel map; outputs in canonical order; see the module docstring.

    The output sites are the distinct keys the pairs reach: found by marking them in the dense index
    grid of the output (``dense_grid`` True) or by sorting them (``torch.unique``, False); None chooses
    :func:`marks_output_grid`. Both give the same map. The sort was the largest cost of a training
    step of the all-regular network (its densified layers hold 27 pairs per site, issue 17); the
    marking is linear in the pairs but reads the whole grid back, so it wins only where the pairs
    are about as many as the grid's cells.
    """
    kernel_size, stride = triple(kernel_size, "kernel_size"), triple(stride, "stride")
    padding, dilation = triple(padding, "padding"), triple(dilation, "dilation")
    out_shape = conv_output_shape(tensor.spatial_shape, kernel_size, stride, padding, dilation)
    coords, n = tensor.coords, tensor.num_sites
    # The conditions separate by axis: per axis a (K_a, N) table of the output coordinate each
    # input reaches through each kernel index, and whether it is a valid one.
    reach, valid = [], []
    for axis in range(3):
        kernel_index = torch.arange(kernel_size[axis], dtype=torch.int32, device=coords.device).unsqueeze(1)
        numerator = coords[:, 1 + axis].unsqueeze(0) + (padding[axis] - kernel_index * dilation[axis])
        if stride[axis] == 1:
            out = numerator
            ok = (out >= 0) & (out < out_shape[axis])
        else:
            out = torch.div(numerator, stride[axis], rounding_mode="floor")
            ok = (out * stride[axis] == numerator) & (out >= 0) & (out < out_shape[axis])
        reach.append(out)
        valid.append(ok)
    kz, ky, kx = kernel_size
    feeds = (valid[0].view(kz, 1, 1, n) & valid[1].view(1, ky, 1, n) & valid[2].view(1, 1, kx, n)).view(kz * ky * kx, n)
    offset, in_rows = feeds.nonzero(as_tuple=True)
    depth, height, width = out_shape
    if stride == (1, 1, 1):
        # Unstrided, an input's output key through offset k is its own key in the output grid (shifted by
        # the padding) minus offset k's linearised reach: one gather and one add per pair.
        b, z, y, x = coords.long().unbind(1)
        own = ((b * depth + z + padding[0]) * height + y + padding[1]) * width + x + padding[2]
        reach_keys = torch.tensor([((i * dilation[0]) * height + j * dilation[1]) * width + k * dilation[2]
                                   for i, j, k in itertools.product(range(kz), range(ky), range(kx))],
                                  dtype=torch.int64, device=coords.device)
        keys = own.index_select(0, in_rows).sub_(reach_keys.index_select(0, offset))
    else:
        z = reach[0].view(-1).index_select(0, (offset // (ky * kx)) * n + in_rows)
        y = reach[1].view(-1).index_select(0, (offset // kx % ky) * n + in_rows)
        x = reach[2].view(-1).index_select(0, (offset % kx) * n + in_rows)
        batch = coords[:, 0].index_select(0, in_rows)
        keys = ((batch.long() * depth + z) * height + y) * width + x
    if dense_grid if dense_grid is not None else marks_output_grid(tensor.batch_size, out_shape, keys.numel()):
        out_keys, out_rows = _INDEX_GRID.distinct_rows(keys, tensor.batch_size * depth * height * width)
    else:
        out_keys, out_rows = torch.unique(keys, sorted=True, return_inverse=True)
    out_coords = _unpack_keys(out_keys, out_shape)
    counts = feeds.sum(1).tolist()
    in_rows, out_rows = _sorted_by_output(in_rows, out_rows, counts, out_keys.numel(), offset)
    return KernelMap(in_rows=in_rows, out_rows=out_rows, pair_counts=counts, identity_offset=None, num_in=n,
                     num_out=out_keys.numel(), kernel_size=kernel_size, stride=stride, padding=padding,
                     dilation=dilation, in_coords=coords, in_spatial_shape=tensor.spatial_shape,
                     out_coords=out_coords, out_spatial_shape=out_shape)


def _unpack_keys(keys: torch.Tensor, spatial_shape) -> torch.Tensor:
    depth, height, width = spatial_shape
    x = keys % width
    y = keys // width % height
    z = keys // (width * height) % depth
    b = keys // (width * height * depth)
    return torch.stack([b, z, y, x], dim=1).to(torch.int32)
