"""Voxelizer: hard mode against spconv's PointToVoxel, dynamic mode against a numpy group-by,
and every bad input."""
import warnings

import numpy as np
import pytest
import torch
from conftest import KITTI_SCANS, NUSCENES_SWEEPS

from datasets import read_points
from voxelize import SparseTensor, Voxelizer

NUSCENES = dict(voxel_size=[0.1, 0.1, 0.2], point_cloud_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0])
KITTI = dict(voxel_size=[0.05, 0.05, 0.1], point_cloud_range=[0.0, -40.0, -3.0, 70.4, 40.0, 1.0])
SMALL = dict(voxel_size=[0.5, 0.5, 0.5], point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0])


def random_cloud(n, seed, columns=4, spread=5.0):
    g = np.random.default_rng(seed)
    xyz = g.uniform(-spread, spread, (n, 3)).astype(np.float32)
    xyz[:, 2] *= 0.5
    return np.concatenate([xyz, g.uniform(0, 1, (n, columns - 3)).astype(np.float32)], axis=1)


def spconv_voxels(points, geometry, max_points, max_voxels):
    from spconv.pytorch.utils import PointToVoxel

    generator = PointToVoxel(vsize_xyz=geometry["voxel_size"], coors_range_xyz=geometry["point_cloud_range"],
                             num_point_features=points.shape[1], max_num_voxels=max_voxels,
                             max_num_points_per_voxel=max_points)
    voxels, coords, num_points = generator(torch.from_numpy(points))
    return voxels, coords, num_points


def assert_equals_spconv(points, geometry, max_points, max_voxels):
    ours = Voxelizer(**geometry, max_points_per_voxel=max_points, max_voxels=max_voxels)(points)
    voxels, coords, num_points = spconv_voxels(points, geometry, max_points, max_voxels)
    assert torch.equal(ours.coords, coords)
    assert torch.equal(ours.num_points, num_points)
    mean = voxels.sum(dim=1) / num_points.unsqueeze(1).float()
    torch.testing.assert_close(ours.features, mean, rtol=1e-6, atol=1e-6)
    return ours


@pytest.mark.parametrize("seed, max_points, max_voxels", [
    (0, 5, 20000),    # no limit bites
    (1, 3, 20000),    # the point limit bites
    (2, 100, 150),    # the voxel limit bites
    (3, 2, 300),      # both
])
def test_hard_mode_equals_spconv_point_to_voxel(seed, max_points, max_voxels):
    points = random_cloud(20000, seed, spread=6.0)  # some points outside SMALL's range
    ours = assert_equals_spconv(points, SMALL, max_points, max_voxels)
    dropped = ours.dropped
    assert dropped.total + int(ours.num_points.sum()) == len(points)


@pytest.mark.parametrize("scan", KITTI_SCANS)
def test_hard_mode_equals_spconv_on_real_kitti(real_file, scan):
    points = read_points(str(real_file(scan)))
    assert_equals_spconv(points, KITTI, max_points=5, max_voxels=40000)
    assert_equals_spconv(points, KITTI, max_points=2, max_voxels=5000)


def test_hard_mode_equals_spconv_on_real_nuscenes_sweeps(real_file):
    points = read_points(str(real_file(NUSCENES_SWEEPS)))
    ours = assert_equals_spconv(points, NUSCENES, max_points=10, max_voxels=120000)
    assert ours.dropped.voxel_full > 0  # the 10-sweep stack overfills voxels


def test_dynamic_mode_means_equal_numpy_group_by():
    points = random_cloud(30000, seed=4, columns=5, spread=6.0)
    ours = Voxelizer(**SMALL, mode="dynamic")(points)
    low, size = np.float32(SMALL["point_cloud_range"][:3]), np.float32(SMALL["voxel_size"])
    cell = np.floor((points[:, :3] - low) / size).astype(np.int64)
    inside = ((cell >= 0) & (cell < 16) & (cell[:, 2:3] < 8)).all(axis=1)
    zyx = cell[inside][:, ::-1]
    unique, inverse, counts = np.unique(zyx, axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(unique), points.shape[1]))
    np.add.at(sums, inverse.ravel(), points[inside].astype(np.float64))
    expected = {tuple(c): (s / n, n) for c, s, n in zip(unique, sums, counts)}
    assert len(ours.coords) == len(expected)
    for c, f, n in zip(ours.coords.tolist(), ours.features.numpy(), ours.num_points.tolist()):
        mean, count = expected[tuple(c)]
        assert n == count
        np.testing.assert_allclose(f, mean, rtol=1e-5, atol=1e-5)
    assert ours.dropped.out_of_range == int((~inside).sum())
    assert ours.dropped.voxel_full == ours.dropped.voxel_limit == 0


def test_point_voxel_ids_point_back_to_voxels():
    points = random_cloud(5000, seed=5, spread=6.0)
    ours = Voxelizer(**SMALL, max_points_per_voxel=4, max_voxels=200)(points)
    ids = ours.point_voxel_ids
    assert int((ids >= 0).sum()) == int(ours.num_points.sum())
    assert torch.equal(torch.bincount(ids[ids >= 0], minlength=len(ours.coords)), ours.num_points.long())
    low, size = torch.tensor(SMALL["point_cloud_range"][:3]), torch.tensor(SMALL["voxel_size"])
    kept = torch.from_numpy(points)[ids >= 0]
    cells = torch.floor((kept[:, :3] - low) / size).flip(1).to(torch.int32)
    assert torch.equal(cells, ours.coords[ids[ids >= 0]])


def test_nonfinite_points_are_dropped_counted_and_warned_once():
    points = random_cloud(1000, seed=6, spread=3.0)
    points[[3, 10, 11], 0] = np.nan
    points[20, 2] = np.inf
    points[30, 3] = -np.inf  # a bad feature also drops the point
    with pytest.warns(RuntimeWarning, match="dropped 5 points") as record:
        ours = Voxelizer(**SMALL, mode="dynamic")(points)
    assert len(record) == 1
    assert ours.dropped.nonfinite == 5
    clean = Voxelizer(**SMALL, mode="dynamic")(np.delete(points, [3, 10, 11, 20, 30], axis=0))
    assert torch.equal(ours.coords, clean.coords) and torch.equal(ours.features, clean.features)
    assert (ours.point_voxel_ids[[3, 10, 11, 20, 30]] == -1).all()


def test_out_of_range_points_are_counted_without_warning():
    points = np.array([[0.1, 0.1, 0.1, 1.0], [100.0, 0.0, 0.0, 1.0], [-4.0, -4.0, -2.0, 1.0],
                       [4.0, 0.0, 0.0, 1.0]], dtype=np.float32)  # the upper bound is exclusive
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = Voxelizer(**SMALL, mode="dynamic")(points)
    assert ours.dropped.out_of_range == 2
    assert ours.coords.tolist() == [[4, 8, 8], [0, 0, 0]]


def test_empty_cloud_gives_empty_voxels_and_empty_sample():
    voxelizer = Voxelizer(**SMALL, max_points_per_voxel=5, max_voxels=100)
    empty = voxelizer(np.zeros((0, 4), dtype=np.float32))
    assert empty.features.shape == (0, 4) and empty.coords.shape == (0, 3)
    tensor, dropped = voxelizer.batch([np.zeros((0, 4), dtype=np.float32)])
    assert tensor.num_sites == 0 and tensor.dense().shape == (1, 4, 8, 16, 16)
    tensor, dropped = voxelizer.batch([random_cloud(100, 7, spread=3.0), np.zeros((0, 4), dtype=np.float32),
                                      random_cloud(50, 8, spread=3.0)])
    assert tensor.sites_per_sample().tolist()[1] == 0
    assert len(dropped) == 3


def test_batch_stacks_clouds_with_batch_index():
    voxelizer = Voxelizer(**SMALL, max_points_per_voxel=5, max_voxels=1000)
    clouds = [random_cloud(500, 9, spread=6.0), random_cloud(800, 10, spread=6.0)]
    tensor, dropped = voxelizer.batch(clouds)
    assert isinstance(tensor, SparseTensor) and tensor.batch_size == 2
    assert tensor.spatial_shape == (8, 16, 16)
    for b, cloud in enumerate(clouds):
        single = voxelizer(cloud)
        rows = tensor.coords[:, 0] == b
        assert torch.equal(tensor.coords[rows, 1:], single.coords)
        assert torch.equal(tensor.features[rows], single.features)
        assert dropped[b] == single.dropped
    SparseTensor(tensor.features, tensor.coords, tensor.spatial_shape, 2)  # passes full validation


@pytest.mark.parametrize("points, message", [
    (np.zeros((10, 2), dtype=np.float32), "at least 3 columns"),
    (np.zeros((10,), dtype=np.float32), "rank 2"),
    (np.zeros((2, 10, 4), dtype=np.float32), "rank 2"),
    (np.zeros((10, 4), dtype=np.int32), "floating point"),
    ([[0.0, 0.0, 0.0]], "numpy array or torch tensor"),
])
def test_bad_point_arrays_raise(points, message):
    with pytest.raises(ValueError, match=message):
        Voxelizer(**SMALL, mode="dynamic")(points)


def test_batch_with_mismatched_columns_raises():
    with pytest.raises(ValueError, match=r"same number of columns, got \[4, 5\]"):
        Voxelizer(**SMALL, mode="dynamic").batch([random_cloud(5, 0), random_cloud(5, 0, columns=5)])


@pytest.mark.parametrize("kwargs, message", [
    (dict(SMALL, mode="hard"), "max_points_per_voxel"),
    (dict(SMALL, mode="dynamic", max_voxels=10), "must be None"),
    (dict(SMALL, mode="soft"), "'hard' or 'dynamic'"),
    (dict(voxel_size=[0.1, 0.1], point_cloud_range=SMALL["point_cloud_range"], mode="dynamic"), "voxel_size"),
    (dict(voxel_size=[0.1, 0.1, 0.1], point_cloud_range=[0, 0, 0, -1, 1, 1], mode="dynamic"), "x1>x0"),
])
def test_bad_voxelizer_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Voxelizer(**kwargs)


def test_grid_shape_matches_spconv():
    from spconv.pytorch.utils import PointToVoxel

    for geometry in (NUSCENES, KITTI, SMALL):
        expected_zyx = PointToVoxel(geometry["voxel_size"], geometry["point_cloud_range"], 4, 1, 1).grid_size
        assert Voxelizer(**geometry, mode="dynamic").spatial_shape == tuple(expected_zyx)


def test_summary_reports_counts_and_occupancy():
    points = random_cloud(3000, seed=11, spread=6.0)
    voxels = Voxelizer(**SMALL, max_points_per_voxel=2, max_voxels=500)(points)
    summary = voxels.summary()
    assert summary["points"] == 3000 and summary["voxels"] == len(voxels.coords)
    assert sum(summary["dropped"].values()) == 3000 - int(voxels.num_points.sum())
    assert summary["occupancy"] == len(voxels.coords) / (8 * 16 * 16)
    assert summary["points_per_voxel_max"] <= 2
