"""The two submanifold lookups (dense index grid, hash map) give the same kernel map, and the
SubM conv matches the dense conv3d oracle on each; the grid is left clean between uses."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from sparse_inputs import random_sparse
from test_sparse_conv_vs_dense import SHAPE, check_against_dense, reachable_sites, triple

import backbones.kernel_map as kernel_map_module
from backbones import SubMConv3d
from backbones.kernel_map import build_submanifold_map, uses_dense_grid
from voxelize.hash_map import CoordHashMap


def assert_same_map(a, b):
    assert a.pair_counts == b.pair_counts
    assert a.identity_offset == b.identity_offset
    assert torch.equal(a.in_rows, b.in_rows) and torch.equal(a.out_rows, b.out_rows)
    assert a.in_rows.dtype == b.in_rows.dtype == torch.int64


@pytest.mark.parametrize("kernel, dilation, border", list(itertools.product([2, 3, (3, 1, 1), (1, 3, 5)], [1, 2],
                                                                            [False, True])))
def test_dense_grid_and_hash_map_give_the_same_map(kernel, dilation, border):
    x = random_sparse(SHAPE, num_sites=120, seed=7, border=border)
    assert_same_map(build_submanifold_map(x, kernel, dilation, dense_grid=True),
                    build_submanifold_map(x, kernel, dilation, dense_grid=False))


def test_dense_grid_keeps_no_sites_of_an_earlier_tensor():
    """A stale cell would hand the next tensor a neighbour it does not have."""
    first = random_sparse(SHAPE, num_sites=200, seed=1)
    build_submanifold_map(first, 3, 1, dense_grid=True)
    second = random_sparse(SHAPE, num_sites=30, seed=2)
    assert_same_map(build_submanifold_map(second, 3, 1, dense_grid=True),
                    build_submanifold_map(second, 3, 1, dense_grid=False))
    # And a larger grid after a smaller one (the buffer grows), and after the grid was freed.
    third = random_sparse((9, 10, 11), batch_size=3, num_sites=300, seed=3)
    assert_same_map(build_submanifold_map(third, 3, 1, dense_grid=True),
                    build_submanifold_map(third, 3, 1, dense_grid=False))
    kernel_map_module.release_dense_grid()
    assert_same_map(build_submanifold_map(second, 3, 1, dense_grid=True),
                    build_submanifold_map(second, 3, 1, dense_grid=False))


def test_lookup_is_chosen_by_grid_size(monkeypatch):
    x = random_sparse(SHAPE, batch_size=2, num_sites=20)
    cells = 2 * SHAPE[0] * SHAPE[1] * SHAPE[2]
    monkeypatch.setattr(kernel_map_module, "DENSE_GRID_MAX_BYTES", 4 * cells)
    assert uses_dense_grid(x)
    monkeypatch.setattr(kernel_map_module, "DENSE_GRID_MAX_BYTES", 4 * cells - 1)
    assert not uses_dense_grid(x)


@pytest.mark.parametrize("max_bytes", [0, 2**30], ids=["hash map", "dense grid"])
@pytest.mark.parametrize("kernel, dilation", [(3, 1), (3, 2), ((1, 3, 3), 1), (2, 1)])
def test_submanifold_conv_matches_dense_on_each_lookup(monkeypatch, max_bytes, kernel, dilation):
    monkeypatch.setattr(kernel_map_module, "DENSE_GRID_MAX_BYTES", max_bytes)
    x = random_sparse(SHAPE, num_sites=90, seed=4, border=True)
    assert uses_dense_grid(x) == bool(max_bytes)
    torch.manual_seed(0)
    layer = SubMConv3d(3, 4, kernel, dilation=dilation, bias=False).double()
    padding = tuple(k // 2 * dilation for k in triple(kernel))
    check_against_dense(x, layer, lambda d, w: F.conv3d(d, w, padding=padding, dilation=dilation), x.keys())


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), ((3, 1, 1), (2, 1, 1), 0), (2, 2, 0), (3, 1, 1)])
def test_regular_map_of_canonically_ordered_input_skips_no_pair(kernel, stride, padding):
    """Input in canonical order takes the no-sort path; its map must be the shuffled input's map
    with the input rows renamed."""
    from backbones.kernel_map import build_regular_map
    from voxelize import SparseTensor

    shuffled = random_sparse(SHAPE, num_sites=150, seed=11)
    order = torch.argsort(shuffled.keys())
    ordered = SparseTensor(shuffled.features[order], shuffled.coords[order], SHAPE, shuffled.batch_size)
    a = build_regular_map(ordered, kernel, stride, padding, 1)
    b = build_regular_map(shuffled, kernel, stride, padding, 1)
    assert a.pair_counts == b.pair_counts
    assert torch.equal(a.out_rows, b.out_rows) and torch.equal(a.out_coords, b.out_coords)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    assert torch.equal(a.in_rows, rank[b.in_rows])


@pytest.mark.parametrize("backbone", ["VoxelBackBone8x", "VoxelResBackBone8x"])
def test_backbone_builds_one_submanifold_map_per_resolution(monkeypatch, backbone):
    """Every SubM layer of a resolution shares one map (the cache hits), and the dense-grid lookup
    builds no hash map at all."""
    import backbones.sparse_modules as modules
    from backbones.voxel_backbones import build_backbone

    builds = []
    original = modules.build_submanifold_map
    monkeypatch.setattr(modules, "build_submanifold_map",
                        lambda x, *args, **kwargs: builds.append(x.tensor_stride) or original(x, *args, **kwargs))
    x = random_sparse((40, 48, 48), batch_size=1, num_sites=2000, channels=4, dtype=torch.float32).fresh_copy()
    model = build_backbone(backbone, in_channels=4).eval()
    hash_builds = []
    monkeypatch.setattr(CoordHashMap, "_build", lambda self, *args: hash_builds.append(args))
    with torch.no_grad():
        model(x)
    assert builds == [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)]
    assert hash_builds == []


def assert_same_regular_map(a, b):
    assert_same_map(a, b)
    assert a.num_out == b.num_out and a.out_spatial_shape == b.out_spatial_shape
    assert torch.equal(a.out_coords, b.out_coords)


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (3, 1, 1, 1), (3, 2, 1, 1), ((3, 1, 1), (2, 1, 1), 0, 1), (2, 2, 0, 1), (3, 1, 0, 2), ((1, 3, 5), 1, (0, 1, 2), 1)])
def test_regular_map_by_dense_grid_equals_the_sorted_one(kernel, stride, padding, dilation):
    """The output sites found by marking the grid are torch.unique's, in its order, with the same pairs;
    the grid is clean afterwards (a second, different tensor gets its own map)."""
    from backbones.kernel_map import build_regular_map

    for seed, batch_size in ((5, 2), (6, 3)):
        x = random_sparse(SHAPE, batch_size=batch_size, num_sites=160, seed=seed, border=True)
        assert_same_regular_map(build_regular_map(x, kernel, stride, padding, dilation, dense_grid=True),
                                build_regular_map(x, kernel, stride, padding, dilation, dense_grid=False))


@pytest.mark.parametrize("max_bytes", [0, 2**30], ids=["sorted", "dense grid"])
@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1)])
def test_regular_conv_matches_dense_on_each_output_search(monkeypatch, max_bytes, kernel, stride, padding):
    from backbones import SparseConv3d

    monkeypatch.setattr(kernel_map_module, "DENSE_GRID_MAX_BYTES", max_bytes)
    x = random_sparse(SHAPE, num_sites=400, seed=4, border=True)
    out_shape = kernel_map_module.conv_output_shape(SHAPE, triple(kernel), triple(stride), triple(padding), (1, 1, 1))
    pairs = kernel_map_module.build_regular_map(x, kernel, stride, padding, 1).num_pairs
    assert kernel_map_module.marks_output_grid(x.batch_size, out_shape, pairs) == bool(max_bytes)
    torch.manual_seed(0)
    layer = SparseConv3d(3, 4, kernel, stride=stride, padding=padding, bias=False).double()
    check_against_dense(x, layer, lambda d, w: F.conv3d(d, w, stride=stride, padding=padding),
                        reachable_sites(x, triple(kernel), triple(stride), triple(padding), (1, 1, 1)))
