"""Point files read right or not at all: on the real scans, the right layouts load and every wrong
layout (by name or forced) raises an error naming the layout that fits; malformed .npy, text,
empty and zero-filled files are named; PCD and LAS files read back the cloud they were written from."""
import os
import pickle
import shutil

import numpy as np
import pytest
from conftest import KITTI_SCANS, NUSCENES_KEYFRAME, NUSCENES_SWEEPS

from datasets.point_files import read_point_file, read_points


def kitti(real_file):
    return np.fromfile(real_file(KITTI_SCANS[0]), dtype=np.float32).reshape(-1, 4)


def test_real_scans_load_with_their_layouts(real_file):
    for relative, shape, layout in [(KITTI_SCANS[1], (120268, 4), "raw float32 x 4 (from the name)"),
                                    (NUSCENES_KEYFRAME, (34688, 5), "raw float32 x 5 (from the name)"),
                                    (NUSCENES_SWEEPS, (271156, 5), "raw float16 x 5 (from the name)")]:
        read = read_point_file(str(real_file(relative)))
        assert read.points.shape == shape and read.layout == layout
    keyframe = read_point_file(str(real_file(NUSCENES_KEYFRAME)))
    assert keyframe.columns == ("x", "y", "z", "intensity", "ring")
    # The dataset readers force the layouts they know; those reads pass the checks too.
    assert read_points(str(real_file(NUSCENES_KEYFRAME)), point_width=5, dtype=np.float32).shape == (34688, 5)
    assert read_points(str(real_file(KITTI_SCANS[0])), point_width=4, dtype=np.float32).shape == (115384, 4)


def test_a_nuscenes_scan_named_bin_is_not_read_as_kitti(real_file, tmp_path):
    shutil.copy(real_file(NUSCENES_KEYFRAME), tmp_path / "000000.bin")
    # before: 43360 garbage points of 4 columns
    with pytest.raises(ValueError, match=r"000000.bin: read as float32 x 4 \(x, y, z, intensity\), the values are "
                                         r"implausible: column 3 \(intensity\) spans -95.88..255, expected 0..65535; "
                                         r"it reads plausibly as float32 x 5 \(a nuScenes .pcd.bin\): pass "
                                         r"point_width=5, dtype='float32'"):
        read_points(str(tmp_path / "000000.bin"))
    assert read_points(str(tmp_path / "000000.bin"), point_width=5).shape == (34688, 5)


@pytest.mark.parametrize("relative, options, likely", [
    (NUSCENES_KEYFRAME, dict(point_width=4), "float32 x 5"),
    (NUSCENES_KEYFRAME, dict(point_width=5, dtype=np.float64), "float32 x 5"),
    (NUSCENES_KEYFRAME, dict(point_width=5, dtype=np.float16), "float32 x 5"),
    (NUSCENES_SWEEPS, dict(point_width=5, dtype=np.float32), "float16 x 5"),
    (KITTI_SCANS[0], dict(point_width=4, dtype=np.float16), "float32 x 4"),
    (KITTI_SCANS[0], dict(point_width=4, dtype=np.float64), "float32 x 4"),
    (KITTI_SCANS[0], dict(point_width=8), "float32 x 4"),     # by repeating column ranges
    (NUSCENES_KEYFRAME, dict(point_width=10), "float32 x 5"),
    (KITTI_SCANS[0], dict(point_width=5), "float32 x 4"),     # by size
    (KITTI_SCANS[0], dict(point_width=16), "float32 x 4"),    # by size
])
def test_forced_wrong_layouts_of_real_scans_raise_naming_the_right_one(real_file, relative, options, likely):
    path = str(real_file(relative))
    with pytest.raises(ValueError, match=rf"(implausible|not a whole number of points).*reads plausibly as {likely}") \
            as error:
        read_points(path, **options)
    if "implausible" in str(error.value):   # the value checks are all that stand between the caller and garbage
        assert read_points(path, check_values=False, **options).shape[1] == options["point_width"]


def test_a_kitti_scan_named_pcd_bin_is_not_read_as_nuscenes(real_file, tmp_path):
    points = kitti(real_file)[:115380]           # a multiple of 5 points, so the size fits 5 columns too
    points.tofile(tmp_path / "scan.pcd.bin")
    with pytest.raises(ValueError, match=r"read as float32 x 5 \(x, y, z, intensity, ring\).*column 3 \(intensity\) "
                                         r"spans -?\d.*it reads plausibly as float32 x 4 \(a KITTI .bin\)"):
        read_points(str(tmp_path / "scan.pcd.bin"))


def test_a_float64_file_is_not_read_as_twice_as_many_float32_points(real_file, tmp_path):
    points = kitti(real_file)
    points.astype(np.float64).tofile(tmp_path / "000000.bin")
    # before: 230768 garbage points
    with pytest.raises(ValueError, match=r"x reaches .* m, beyond 1000 m; it reads plausibly as float64 x 4: pass "
                                         r"point_width=4, dtype='float64'"):
        read_points(str(tmp_path / "000000.bin"))
    np.testing.assert_array_equal(read_points(str(tmp_path / "000000.bin"), dtype=np.float64), points)


def test_a_ring_column_must_hold_whole_numbers(real_file, tmp_path):
    points = read_points(str(real_file(NUSCENES_KEYFRAME)))
    points[:, 4] += 0.5
    points.tofile(tmp_path / "scan.pcd.bin")
    with pytest.raises(ValueError, match=r"column 4 \(ring\) spans 0.5..31.5, expected whole numbers 0..255"):
        read_points(str(tmp_path / "scan.pcd.bin"))


def test_transposed_npy_is_an_error_not_four_points(real_file, tmp_path):
    np.save(tmp_path / "scan.npy", kitti(real_file).T)
    # before: 4 points of 115384 channels
    with pytest.raises(ValueError, match=r"scan.npy: expected a 2-D float array \(N, C>=3\) with C <= 16, got float32 "
                                         r"\(4, 115384\); it looks transposed \(channels first\): save points.T"):
        read_points(str(tmp_path / "scan.npy"))
    np.save(tmp_path / "scan.npy", kitti(real_file))
    np.testing.assert_array_equal(read_points(str(tmp_path / "scan.npy")), kitti(real_file))


class Hostile:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("write, message", [
    (lambda p: np.save(p, np.array([{"x": 1}], dtype=object)), r"holds Python objects.*refusing to unpickle"),
    (lambda p: p.write_text("1.0 2.0 3.0\n4.0 5.0 6.0\n"), r"a text file \(starts '1.0 2.0 3.0\\n4.0"),
    (lambda p: p.write_bytes(pickle.dumps(np.zeros((3, 4)))), r"not an .npy file \(no NUMPY header; a pickle\?\)"),
    (lambda p: np.savez(open(p, "wb"), points=np.zeros((3, 4))), r"an .npz archive named .npy"),
    (lambda p: np.save(p, np.zeros((20, 17))), r"got float64 \(20, 17\)$"),
    (lambda p: np.save(p, np.zeros((5, 17))), r"got float64 \(5, 17\); it looks transposed"),
    (lambda p: np.save(p, np.zeros((5, 2))), r"C>=3"),
    (lambda p: np.save(p, np.zeros((2, 5, 4))), r"2-D"),
    (lambda p: np.save(p, np.zeros(4, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])), r"a structured array"),
    (lambda p: np.save(p, np.zeros((5, 4), dtype=np.complex64)), r"expected a float array"),
    (lambda p: p.write_bytes(b""), r"a text file|not an .npy file"),
    (lambda p: p.write_bytes(open(p.parent / "ok.npy", "rb").read()[:100]), r"not a readable .npy array"),
])
def test_malformed_npy_files_are_named(tmp_path, write, message):
    np.save(tmp_path / "ok.npy", np.ones((100, 4), dtype=np.float32))
    path = tmp_path / "cloud.npy"
    write(path)
    with pytest.raises(ValueError, match=rf"cloud.npy: .*{message}"):
        read_points(str(path))


def test_a_pickled_npy_is_never_run(tmp_path):
    Hostile.marker = str(tmp_path / "code-ran")
    np.save(tmp_path / "cloud.npy", np.array([Hostile()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_points(str(tmp_path / "cloud.npy"))
    assert not os.path.exists(Hostile.marker)


@pytest.mark.parametrize("name, write, message", [
    ("dir.bin", lambda p: p.mkdir(), r"dir.bin: is a directory, not a point file"),
    ("empty.bin", lambda p: p.write_bytes(b""), r"empty.bin: empty file \(0 bytes\), no points"),
    ("text.bin", lambda p: p.write_text("0.5 1.5 -0.2 0.3\n" * 50), r"text.bin: looks like a text file"),
    ("zeros.bin", lambda p: np.zeros((64, 4), np.float32).tofile(p), r"all 64 points lie within 1 cm"),
    ("nan.bin", lambda p: np.full((64, 4), np.nan, np.float32).tofile(p), r"every point is NaN"),
    ("far.bin", lambda p: (np.ones((64, 4), np.float32) * [5e3, 0, 0, 1]).astype(np.float32).tofile(p),
     r"x reaches 5000 m, beyond 1000 m"),
])
def test_files_that_are_not_point_clouds_are_named(tmp_path, name, write, message):
    write(tmp_path / name)
    with pytest.raises(ValueError, match=message):
        read_points(str(tmp_path / name))


def test_a_device_is_not_a_point_file():
    with pytest.raises(ValueError, match=r"/dev/null: not a regular file"):
        read_points("/dev/null")


def test_bad_forced_layouts_are_named(real_file):
    path = str(real_file(KITTI_SCANS[0]))
    with pytest.raises(ValueError, match=r"point_width must be a whole number, got 4.5"):
        read_points(path, point_width=4.5)
    with pytest.raises(ValueError, match=r"point_width must be 3..16 \(x, y, z, ...\), got 2"):
        read_points(path, point_width=2)
    with pytest.raises(ValueError, match=r"dtype must be float16, float32 or float64, got int32"):
        read_points(path, dtype=np.int32)


# --------------------------------------------------------------------------------------- PCD, LAS

@pytest.mark.parametrize("encoding", ["binary", "binary_compressed", "ascii"])
def test_a_pcd_written_from_a_real_scan_reads_back_equal(real_file, tmp_path, encoding):
    from pypcd4 import Encoding, PointCloud

    points = read_points(str(real_file(NUSCENES_KEYFRAME)))
    columns = [points[:, 0], points[:, 1], points[:, 2], points[:, 3], points[:, 4].astype(np.uint16)]
    cloud = PointCloud.from_points(columns, ("x", "y", "z", "intensity", "ring"),
                                   (np.float32, np.float32, np.float32, np.float32, np.uint16))
    cloud.save(tmp_path / "scan.pcd", encoding=Encoding(encoding))
    read = read_point_file(str(tmp_path / "scan.pcd"))
    assert read.columns == ("x", "y", "z", "intensity", "ring") and read.layout.startswith(f"PCD {encoding}")
    np.testing.assert_allclose(read.points, points, rtol=0, atol=1e-9 if encoding == "ascii" else 0)  # ascii: %.10f


def test_pcd_field_order_padding_and_bad_files(real_file, tmp_path):
    from pypcd4 import PointCloud

    points = kitti(real_file)[:1000]
    # intensity first and a packed colour: the reader puts x, y, z first and skips rgb
    cloud = PointCloud.from_points([points[:, 3], points[:, 0], points[:, 1], points[:, 2], np.zeros(1000, np.float32)],
                                   ("intensity", "x", "y", "z", "rgb"), (np.float32,) * 5)
    cloud.save(tmp_path / "order.pcd")
    read = read_point_file(str(tmp_path / "order.pcd"))
    assert read.columns == ("x", "y", "z", "intensity") and "skipped rgb" in read.layout
    np.testing.assert_array_equal(read.points, points)
    PointCloud.from_points(points[:, [0, 1, 3]], ("x", "y", "intensity"), (np.float32,) * 3).save(tmp_path / "noz.pcd")
    with pytest.raises(ValueError, match=r"noz.pcd: PCD file has no z field \(fields: x y intensity\)"):
        read_points(str(tmp_path / "noz.pcd"))
    (tmp_path / "junk.pcd").write_text("this is not a PCD header\n")
    with pytest.raises(ValueError, match=r"junk.pcd: not a readable PCD file"):
        read_points(str(tmp_path / "junk.pcd"))
    stamps = 1.7e9 + np.linspace(0, 0.1, 1000)
    PointCloud.from_points([points[:, 0], points[:, 1], points[:, 2], stamps], ("x", "y", "z", "timestamp"),
                           (np.float32, np.float32, np.float32, np.float64)).save(tmp_path / "stamps.pcd")
    # before (any float32 cast): 0.1 s of per-point times rounded to one or two values
    with pytest.raises(ValueError, match=r"stamps.pcd: field timestamp \(float64, .*\) loses up to .* in float32"):
        read_points(str(tmp_path / "stamps.pcd"))


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_and_laz_read_back_the_cloud(real_file, tmp_path, suffix):
    import laspy

    points = kitti(real_file)[:5000].astype(np.float64)
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales, header.offsets = np.array([0.001] * 3), np.zeros(3)
    las = laspy.LasData(header)
    las.x, las.y, las.z = points[:, 0], points[:, 1], points[:, 2]
    las.intensity = np.round(points[:, 3] * 255).astype(np.uint16)
    las.write(str(tmp_path / f"scan{suffix}"))
    read = read_point_file(str(tmp_path / f"scan{suffix}"))
    assert read.columns == ("x", "y", "z", "intensity") and read.points.shape == (5000, 4)
    np.testing.assert_allclose(read.points[:, :3], points[:, :3], atol=0.0006)
    np.testing.assert_array_equal(read.points[:, 3], np.round(points[:, 3] * 255))
    header.offsets = np.array([500_000.0, 4_500_000.0, 0.0])   # UTM: float32 keeps 0.5 m at 4.5e6 m
    utm = laspy.LasData(header)
    utm.x, utm.y, utm.z = points[:, 0] + 500_000, points[:, 1] + 4_500_000, points[:, 2]
    utm.write(str(tmp_path / f"utm{suffix}"))
    with pytest.raises(ValueError, match=rf"utm{suffix}: field x \(float64, .*\) loses up to .* in float32; "
                                         r"subtract an origin"):
        read_points(str(tmp_path / f"utm{suffix}"))
    (tmp_path / f"junk{suffix}").write_bytes(b"LASF" + bytes(300))
    with pytest.raises(ValueError, match=rf"junk{suffix}: not a readable LAS/LAZ file"):
        read_points(str(tmp_path / f"junk{suffix}"))


def test_self_describing_files_named_bin_are_named(real_file, tmp_path):
    from pypcd4 import PointCloud

    points = kitti(real_file)[:2000]
    np.save(tmp_path / "a.npy", points)
    PointCloud.from_points(points, ("x", "y", "z", "intensity"), (np.float32,) * 4).save(tmp_path / "a.pcd")
    np.savez(tmp_path / "a.npz", points=points)
    for source, kind in [("a.npy", r"an .npy array .*name it \*.npy"), ("a.pcd", r"a PCD file .*name it \*.pcd"),
                         ("a.npz", r"a zip or .npz archive")]:
        shutil.copy(tmp_path / source, tmp_path / "000000.bin")   # before: header bytes read as points
        with pytest.raises(ValueError, match=rf"000000.bin: is {kind}"):
            read_points(str(tmp_path / "000000.bin"))
    # upper-case suffixes are the same formats
    points.tofile(tmp_path / "SCAN.BIN")
    np.testing.assert_array_equal(read_points(str(tmp_path / "SCAN.BIN")), points)
    shutil.copy(tmp_path / "a.pcd", tmp_path / "A.PCD")
    np.testing.assert_array_equal(read_points(str(tmp_path / "A.PCD")), points)


def test_no_return_rows_are_kept_scattered_nans_are_not(real_file, tmp_path):
    points = kitti(real_file).copy()
    points[::100, :3] = np.nan                # an organized cloud's missing returns
    points.tofile(tmp_path / "organized.bin")
    read = read_points(str(tmp_path / "organized.bin"))
    np.testing.assert_array_equal(read, points)   # kept, NaN and all, for the voxelizer to drop and count
    points[5, 3] = np.nan                     # one stray NaN in an otherwise valid row
    points.tofile(tmp_path / "stray.bin")
    with pytest.raises(ValueError, match=r"1 values are NaN or infinite outside no-return rows \(first in column 3, "
                                         r"intensity\)"):
        read_points(str(tmp_path / "stray.bin"))
    np.full((10, 4), np.nan, np.float32).tofile(tmp_path / "all-nan.bin")
    with pytest.raises(ValueError, match=r"every point is NaN"):
        read_points(str(tmp_path / "all-nan.bin"))
