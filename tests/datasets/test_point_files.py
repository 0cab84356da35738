"""read_points: every supported layout, and files that are not a whole number of points."""
import numpy as np
import pytest
from conftest import KITTI_SCANS, NUSCENES_KEYFRAME, NUSCENES_SWEEPS

from datasets import point_file_layout, read_points


@pytest.mark.parametrize("name, dtype, width", [
    ("000123.bin", np.float32, 4),
    ("n015__LIDAR_TOP__1532402927647951.pcd.bin", np.float32, 5),
    ("sweeps10_float16_N5.bin", np.float16, 5),
])
def test_layouts_round_trip(tmp_path, name, dtype, width):
    points = np.random.default_rng(0).normal(scale=10.0, size=(37, width))
    points[:, 3:] = np.round(np.abs(points[:, 3:]))  # plausible: intensity >= 0, a whole-number ring
    points = points.astype(dtype)
    path = tmp_path / name
    points.tofile(path)
    assert point_file_layout(str(path)) == (np.dtype(dtype), width)
    loaded = read_points(str(path))
    assert loaded.dtype == np.float32 and loaded.shape == (37, width)
    np.testing.assert_array_equal(loaded, points.astype(np.float32))


def test_npy_and_explicit_layout(tmp_path):
    points = np.arange(30, dtype=np.float64).reshape(6, 5)
    np.save(tmp_path / "cloud.npy", points)
    assert read_points(str(tmp_path / "cloud.npy")).dtype == np.float32
    points.astype(np.float32).tofile(tmp_path / "cloud.raw")
    np.testing.assert_array_equal(read_points(str(tmp_path / "cloud.raw"), point_width=5, dtype=np.float32),
                                  points.astype(np.float32))


def test_truncated_file_names_file_size_and_width(tmp_path):
    path = tmp_path / "000007.bin"
    np.zeros(4 * 10 + 1, dtype=np.float32).tofile(path)  # one stray value
    with pytest.raises(ValueError, match=r"000007\.bin: size 164 bytes is not a whole number of points of "
                                         r"4 x float32 \(16 bytes each\)"):
        read_points(str(path))


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 2)), "C>=3"), (np.zeros(6), "2-D"), (np.zeros((4, 3), dtype=np.int32), "float"),
])
def test_bad_npy_arrays_raise(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        read_points(str(tmp_path / "bad.npy"))


def test_unknown_layout_and_missing_file_raise(tmp_path):
    (tmp_path / "cloud.xyz").write_bytes(b"\0" * 12)
    with pytest.raises(ValueError, match="cannot tell the point layout"):
        read_points(str(tmp_path / "cloud.xyz"))
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_points(str(tmp_path / "nope.bin"))


@pytest.mark.parametrize("relative, shape_check", [
    (KITTI_SCANS[0], lambda p: p.shape[1] == 4 and 100_000 < len(p) < 130_000 and p[:, 3].max() <= 1.0),
    (NUSCENES_KEYFRAME, lambda p: p.shape == (34688, 5) and p[:, 4].max() <= 31),
    (NUSCENES_SWEEPS, lambda p: p.shape == (271156, 5) and 0 <= p[:, 4].min() and p[:, 4].max() <= 0.5),
])
def test_real_files(real_file, relative, shape_check):
    assert shape_check(read_points(str(real_file(relative))))
