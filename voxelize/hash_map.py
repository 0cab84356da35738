"""A vectorised open-addressing hash table from voxel coordinates to row indices.

Coordinates ``[b, z, y, x]`` are packed into one int64 key,
``((b * D + z) * H + y) * W + x``, after an explicit range check; the key doubles as the
canonical sort key of a site. The table uses linear probing. Insertion and lookup run in
vectorised rounds over all pending elements at once: the only Python loop is over probe
rounds, never over elements.

Insertion is deterministic, so the table is identical on CPU and CUDA: when several
elements compete for the same empty slot in a round, the lowest row index wins, and the
others look at that slot again in the next round. Hence of duplicate coordinates the
first row is always the one stored.
"""
from __future__ import annotations

import torch

EMPTY = -1
ABSENT = -2  # a query key that cannot be stored: outside the grid
_MIX = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: 2^64 / golden ratio


def _check_grid(spatial_shape, batch_size) -> tuple[tuple[int, int, int], int]:
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"spatial_shape must be three positive ints (D, H, W), got {spatial_shape}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(batch_size) * shape[0] * shape[1] * shape[2] >= 2**62:
        raise ValueError(f"grid too large to pack into int64 keys: batch_size {batch_size} x {shape}")
    return shape, int(batch_size)


def check_coords(coords: torch.Tensor, name: str = "coords") -> None:
    """Raise ValueError unless ``coords`` is an (N, 4) int32 tensor."""
    if not isinstance(coords, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(coords).__name__}")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) [b, z, y, x], got {tuple(coords.shape)}")
    if coords.dtype != torch.int32:
        raise ValueError(f"{name} must be int32, got {coords.dtype}")


def inside_grid(coords: torch.Tensor, spatial_shape, batch_size: int) -> torch.Tensor:
    """(N,) bool: which rows of ``coords`` (N, 4) ``[b, z, y, x]`` lie inside the grid."""
    upper = torch.tensor([batch_size, *spatial_shape], dtype=torch.int32, device=coords.device)
    return ((coords >= 0) & (coords < upper)).all(dim=1)


def pack_keys(coords: torch.Tensor, spatial_shape, batch_size: int) -> torch.Tensor:
    """Linearise ``[b, z, y, x]`` rows into int64 keys; raises if any row is outside the grid."""
    shape, batch_size = _check_grid(spatial_shape, batch_size)
    check_coords(coords)
    inside = inside_grid(coords, shape, batch_size)
    if not bool(inside.all()):
        bad = coords[~inside][0].tolist()
        raise ValueError(
            f"{int((~inside).sum())} coords lie outside batch range [0, {batch_size}) x grid {shape}; "
            f"first offender [b, z, y, x] = {bad}")
    return _linearise(coords, shape)


def _linearise(coords: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    c = coords.to(torch.int64)
    depth, height, width = shape
    return ((c[:, 0] * depth + c[:, 1]) * height + c[:, 2]) * width + c[:, 3]


class CoordHashMap:
    """Maps voxel coordinates ``[b, z, y, x]`` to their row index in ``coords``.

    Args:
        coords: (N, 4) int32 ``[b, z, y, x]``, every row inside ``batch_size`` x ``spatial_shape``
            (ValueError otherwise).
        spatial_shape: grid size (D, H, W).
        batch_size: number of batch samples B; ``b`` must lie in ``[0, B)``.
        load_factor: maximum fill of the table; capacity is the smallest power of two
            >= N / load_factor (0.5 by default, so at least twice the entries).

    Attributes:
        duplicate_rows: (K,) int64, rows whose coordinates repeat an earlier row (in row order).
            The earlier row is the one the map returns for them.
        max_probe_length: longest probe chain of any stored key; lookups stop after it.
    """

    def __init__(self, coords: torch.Tensor, spatial_shape, batch_size: int, load_factor: float = 0.5):
        if not 0.0 < load_factor <= 0.9:
            raise ValueError(f"load_factor must lie in (0, 0.9], got {load_factor}")
        self._build(pack_keys(coords, spatial_shape, batch_size), spatial_shape, batch_size, load_factor)

    @classmethod
    def from_keys(cls, keys: torch.Tensor, spatial_shape, batch_size: int,
                  load_factor: float = 0.5) -> "CoordHashMap":
        """Build from (N,) int64 keys already packed by :func:`pack_keys` (no range check)."""
        if keys.dtype != torch.int64 or keys.dim() != 1:
            raise ValueError(f"keys must be a 1-D int64 tensor, got {keys.dtype} {tuple(keys.shape)}")
        if not 0.0 < load_factor <= 0.9:
            raise ValueError(f"load_factor must lie in (0, 0.9], got {load_factor}")
        self = cls.__new__(cls)
        self._build(keys, spatial_shape, batch_size, load_factor)
        return self

    def _build(self, keys, spatial_shape, batch_size, load_factor):
        self.spatial_shape, self.batch_size = _check_grid(spatial_shape, batch_size)
        self.device = keys.device
        self.num_rows = keys.numel()
        capacity = 2
        while capacity * load_factor < max(self.num_rows, 1):
            capacity *= 2
        self.capacity = capacity
        self._mask = capacity - 1
        self._shift = 64 - (capacity.bit_length() - 1)
        # One (key, row) entry per slot: a lookup fetches both with one gather (one cache line).
        self.table = torch.full((capacity, 2), EMPTY, dtype=torch.int64, device=self.device)
        self.table_keys, self.table_rows = self.table[:, 0], self.table[:, 1]
        # Gathering 16-byte entries as one complex128 element is 2.6x faster than as int64 pairs.
        self._entries = self.table.view(torch.complex128).view(-1)
        self.duplicate_rows, self.first_rows = self._insert(keys)

    def home_slot(self, keys: torch.Tensor) -> torch.Tensor:
        """The first slot probed for each int64 key (exposed so tests can build colliding keys).

        Fibonacci hashing: the top bits of key x 2^64/phi (mod 2^64) spread consecutive keys
        evenly; computed in place, as fresh large temporaries cost page faults.
        """
        slot = keys * _MIX
        slot >>= self._shift
        return slot.bitwise_and_(self._mask)

    def _insert(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = keys.numel()
        rows = torch.arange(n, dtype=torch.int64, device=self.device)
        # first_rows[i]: the row whose key is stored for row i's key (i itself unless a duplicate).
        first_rows = rows.clone()
        is_duplicate = torch.zeros(n, dtype=torch.bool, device=self.device)
        nobody = torch.tensor(n, dtype=torch.int64, device=self.device)
        claim = torch.full((self.capacity,), n, dtype=torch.int64, device=self.device)
        # The pending rows, their keys, slots and probe counts, kept compact round by round.
        pending, p_key, p_slot = rows, keys, self.home_slot(keys)
        p_probes = torch.zeros(n, dtype=torch.int64, device=self.device)
        self.max_probe_length = 0
        while pending.numel():
            held = self.table_keys[p_slot]
            same = held == p_key
            empty = held == EMPTY
            # Of the rows that want the same empty slot, the lowest row index takes it.
            claim.scatter_reduce_(0, p_slot, torch.where(empty, pending, nobody), reduce="amin")
            won = claim[p_slot] == pending
            won_slots = p_slot[won]
            self.table_keys[won_slots] = p_key[won]
            self.table_rows[won_slots] = pending[won]
            claim[won_slots] = n
            if won_slots.numel():
                self.max_probe_length = max(self.max_probe_length, int(p_probes[won].max()) + 1)
            if bool(same.any()):
                dup = pending[same]
                is_duplicate[dup] = True
                first_rows[dup] = self.table_rows[p_slot[same]]
            # Rows that met another key move on; rows that lost a race look again at the same slot.
            moving = ~(same | empty)
            p_slot = torch.where(moving, (p_slot + 1) & self._mask, p_slot)
            p_probes = p_probes + moving
            left = ~(same | won)
            pending, p_key, p_slot, p_probes = pending[left], p_key[left], p_slot[left], p_probes[left]
        return rows[is_duplicate], first_rows

    def query(self, coords: torch.Tensor) -> torch.Tensor:
        """Row index of each queried coordinate, or -1 where it is absent or outside the grid.

        Args:
            coords: (M, 4) int32 ``[b, z, y, x]``; rows outside the grid are allowed (they map to -1).
        Returns:
            (M,) int64 row indices into the ``coords`` the map was built from.
        """
        check_coords(coords, "query coords")
        if coords.device != self.device:
            raise ValueError(f"query coords on {coords.device}, hash map on {self.device}")
        keys = _linearise(coords, self.spatial_shape)
        keys.masked_fill_(~inside_grid(coords, self.spatial_shape, self.batch_size), ABSENT)
        return self.query_keys(keys)

    def query_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """Like :meth:`query` for int64 keys packed as :func:`pack_keys` does; a negative key is absent."""
        if self.num_rows == 0 or keys.numel() == 0:
            return torch.full(keys.shape, EMPTY, dtype=torch.int64, device=self.device)
        pending = None  # all queries, until the first compaction
        slot = self.home_slot(keys)
        for _ in range(self.max_probe_length):
            entries = self._entries.index_select(0, slot).view(torch.int64).view(-1, 2)
            held, rows = entries[:, 0], entries[:, 1]
            found = held == keys
            if pending is None:
                result = torch.where(found, rows, EMPTY)
            else:
                result.index_copy_(0, pending, torch.where(found, rows, EMPTY))
            # Stop at a hit, at an empty slot (the key is absent), or at once for an absent key.
            go_on = (held != EMPTY) & ~found & (keys >= 0)
            still = go_on.nonzero().squeeze(1)
            if still.numel() == 0:
                break
            pending = still if pending is None else pending.index_select(0, still)
            keys = keys.index_select(0, still)
            slot = slot.index_select(0, still).add_(1).bitwise_and_(self._mask)
        return result

    def __len__(self) -> int:
        return self.num_rows - self.duplicate_rows.numel()
