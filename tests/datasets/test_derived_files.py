"""Derived files cannot go stale or run code: the info cache and the GT database are keyed by what
they were built from, rebuilt when it changes, stored as npz (never unpickled), and kept out of a
dataset folder that is not writable. The oracle is a build from scratch into an empty cache folder."""
import json
import os
import pickle

import numpy as np
import pytest

from datasets import derived_files
from datasets.gt_sampling import GTSampler, build_gt_database, ensure_gt_database, gt_database_key, load_gt_database
from datasets.nuscenes_dataset import NuScenesDataset, infos_from_arrays, infos_to_arrays
from datasets.nuscenes_writer import TRAIN_SPLIT, VAL_SPLIT, make_synthetic_database

VERSION = "v1.0-synthetic"
TEN_CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
               "pedestrian", "traffic_cone"]


def make_database(root, seed):
    make_synthetic_database(str(root), scenes=2, seed=seed, keyframes_per_scene=2)


def boxes_of(dataset):
    return [(info.token, info.gt_names, info.gt_boxes.tolist()) for info in dataset.infos]


def fresh(root, split, tmp_path, **options):
    """The same dataset built with no cache to read (the oracle)."""
    folder = tmp_path / f"fresh-{len(os.listdir(tmp_path))}"
    return NuScenesDataset(str(root), VERSION, split, cache_dir=str(folder), **options)


class Hostile:
    """Unpickling this creates a marker file: proof that a loader ran code from a file."""
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_pickle(marker) -> bytes:
    Hostile.marker = str(marker)
    return pickle.dumps(Hostile())


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    root = tmp_path_factory.mktemp("db")
    make_database(root, seed=0)
    return root


def test_a_changed_class_list_is_not_served_from_the_cache(database, tmp_path):
    cars = NuScenesDataset(str(database), VERSION, TRAIN_SPLIT, num_sweeps=1, class_names=["car"])
    assert {name for info in cars.infos for name in info.gt_names} == {"car"}
    every = NuScenesDataset(str(database), VERSION, TRAIN_SPLIT, num_sweeps=1, class_names=TEN_CLASSES)
    names = {name for info in every.infos for name in info.gt_names}
    assert "pedestrian" in names and len(names) >= 3                  # before: cars only, from the pickle
    assert boxes_of(every) == boxes_of(fresh(database, TRAIN_SPLIT, tmp_path, num_sweeps=1, class_names=TEN_CLASSES))
    labels = every[0]["gt_labels"]
    assert labels.max() < len(TEN_CLASSES)
    # Both caches live side by side; the first is still right for its class list.
    again = NuScenesDataset(str(database), VERSION, TRAIN_SPLIT, num_sweeps=1, class_names=["car"])
    assert boxes_of(again) == boxes_of(cars) and again.cache_path != every.cache_path


def test_a_database_regenerated_in_place_gets_fresh_infos_and_gt_database(tmp_path):
    root = tmp_path / "db"
    make_database(root, seed=0)
    old = NuScenesDataset(str(root), VERSION, TRAIN_SPLIT, num_sweeps=1)
    database = str(tmp_path / "gt_database.npz")
    assert ensure_gt_database(old, database) == "built"
    old_objects = load_gt_database(database)
    make_database(root, seed=1)                                          # same tokens, other boxes
    new = NuScenesDataset(str(root), VERSION, TRAIN_SPLIT, num_sweeps=1)
    assert [i.token for i in new.infos] == [i.token for i in old.infos]
    assert boxes_of(new) != boxes_of(old)                                # before: the seed-0 boxes
    assert boxes_of(new) == boxes_of(fresh(root, TRAIN_SPLIT, tmp_path, num_sweeps=1))
    with pytest.raises(ValueError, match=r"GT database .* is stale: built with other dataset"):
        GTSampler(database, {"car": 2}, new.class_names, expected_key=gt_database_key(new, 5))
    with pytest.warns(UserWarning, match=r"built from other data \(dataset, point_files changed\): rebuilding"):
        assert ensure_gt_database(new, database) == "rebuilt"
    rebuilt = load_gt_database(database)
    assert [o.box.tolist() for o in rebuilt] != [o.box.tolist() for o in old_objects]
    oracle = tmp_path / "oracle.npz"
    build_gt_database(new, str(oracle))
    assert [(o.name, o.box.tolist(), o.points.tolist()) for o in rebuilt] == \
        [(o.name, o.box.tolist(), o.points.tolist()) for o in load_gt_database(str(oracle))]
    assert ensure_gt_database(new, database) == "current"
    GTSampler(database, {"car": 2}, new.class_names, expected_key=gt_database_key(new, 5))


def test_touching_a_table_or_a_point_file_rebuilds(database, tmp_path):
    dataset = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    gt_path = str(tmp_path / "gt.npz")
    ensure_gt_database(dataset, gt_path)
    cached_key, _ = derived_files.read_derived_file(dataset.cache_path)
    table = database / VERSION / "sample_annotation.json"
    status = os.stat(table)
    os.utime(table, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    touched = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    rebuilt_key, _ = derived_files.read_derived_file(touched.cache_path)
    assert touched.cache_path == dataset.cache_path and rebuilt_key != cached_key   # rewritten, not reused
    assert derived_files.key_differences(rebuilt_key, cached_key) == ["tables"]
    with pytest.warns(UserWarning, match="dataset changed"):
        assert ensure_gt_database(touched, gt_path) == "rebuilt"
    scan = database / touched.infos[0].lidar_path
    status = os.stat(scan)
    os.utime(scan, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    with pytest.warns(UserWarning, match=r"\(point_files changed\)"):
        assert ensure_gt_database(touched, gt_path) == "rebuilt"


def test_sweeps_and_min_points_are_part_of_the_key(database, tmp_path):
    one = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    three = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=3)
    assert one.cache_path != three.cache_path
    assert max(len(info.sweeps) for info in three.infos) == 2 and all(not info.sweeps for info in one.infos)
    gt_path = str(tmp_path / "gt.npz")
    ensure_gt_database(one, gt_path, min_points=5)
    with pytest.warns(UserWarning, match="min_points changed"):
        assert ensure_gt_database(one, gt_path, min_points=50) == "rebuilt"
    assert all(len(o.points) >= 50 for o in load_gt_database(gt_path))


def test_infos_survive_the_npz_round_trip(database, tmp_path):
    dataset = fresh(database, TRAIN_SPLIT, tmp_path, num_sweeps=3)
    back = infos_from_arrays(infos_to_arrays(dataset.infos))
    assert len(back) == len(dataset.infos) > 0
    for a, b in zip(dataset.infos, back):
        assert (a.token, a.timestamp, a.lidar_path, a.gt_names) == (b.token, b.timestamp, b.lidar_path, b.gt_names)
        np.testing.assert_array_equal(a.lidar_to_ego, b.lidar_to_ego)
        np.testing.assert_array_equal(a.ego_to_global, b.ego_to_global)
        np.testing.assert_array_equal(a.gt_boxes, b.gt_boxes)
        np.testing.assert_array_equal(a.num_lidar_pts, b.num_lidar_pts)
        assert [(p, t.tolist(), lag) for p, t, lag in a.sweeps] == [(p, t.tolist(), lag) for p, t, lag in b.sweeps]


def test_a_pickle_in_place_of_a_cache_is_never_run(database, tmp_path):
    dataset = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    marker = tmp_path / "code-ran"
    with open(dataset.cache_path, "wb") as f:
        f.write(hostile_pickle(marker))
    again = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    assert not marker.exists() and boxes_of(again) == boxes_of(dataset)        # rebuilt, not unpickled
    gt_path = tmp_path / "gt.npz"
    gt_path.write_bytes(hostile_pickle(marker))
    with pytest.raises(ValueError, match=r"gt.npz: not a readable sparsevox derived file.*not overwriting it"):
        ensure_gt_database(again, str(gt_path))
    with pytest.raises(ValueError, match=r"gt.npz: not a readable sparsevox derived file"):
        GTSampler(str(gt_path), {"car": 1}, again.class_names)
    assert not marker.exists() and gt_path.read_bytes() == hostile_pickle(marker)   # left as it was
    with pytest.raises(ValueError, match=r"gt_database.pkl must end in .npz"):
        ensure_gt_database(again, str(tmp_path / "gt_database.pkl"))


def test_a_damaged_cache_is_rebuilt(database):
    dataset = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    with open(dataset.cache_path, "r+b") as f:
        f.truncate(100)
    assert boxes_of(NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)) == boxes_of(dataset)
    key, arrays = derived_files.read_derived_file(dataset.cache_path)              # rewritten whole
    assert key == json.loads(json.dumps(dataset.infos_key)) and len(arrays["token"]) == len(dataset)


def test_a_read_only_dataset_caches_in_the_user_cache_folder(database, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SPARSEVOX_CACHE_DIR", raising=False)
    real_access = os.access
    monkeypatch.setattr(derived_files.os, "access",
                        lambda path, mode: False if os.path.samefile(path, database) else real_access(path, mode))
    before = set(os.listdir(database))
    dataset = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=2)
    assert os.path.dirname(dataset.cache_path) == str(tmp_path / "xdg" / "sparsevox")
    assert os.path.isfile(dataset.cache_path) and set(os.listdir(database)) == before
    explicit = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=2, cache_dir=str(tmp_path / "mine"))
    assert os.path.dirname(explicit.cache_path) == str(tmp_path / "mine")
    assert boxes_of(explicit) == boxes_of(dataset)


def test_a_database_of_another_dataset_is_refused_by_the_sampler(database, tmp_path):
    val = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1)
    train = NuScenesDataset(str(database), VERSION, TRAIN_SPLIT, num_sweeps=1)
    gt_path = str(tmp_path / "gt.npz")
    ensure_gt_database(val, gt_path)
    with pytest.raises(ValueError, match=r"stale: built with other dataset, point_files"):
        GTSampler(gt_path, {"car": 1}, train.class_names, expected_key=gt_database_key(train, 5))


def test_an_unwritable_cache_costs_time_not_correctness(database, tmp_path):
    pytest.importorskip("nuscenes")  # inside pytest.warns a missing devkit would read as "did not warn"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match=r"could not write the info cache .*a-file"):
        dataset = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1, cache_dir=str(blocker))
    assert boxes_of(dataset) == boxes_of(fresh(database, VAL_SPLIT, tmp_path, num_sweeps=1))


def test_an_npz_with_object_members_is_not_a_derived_file(tmp_path):
    path = tmp_path / "gt.npz"
    np.savez(path, derived_file_key=np.array('{"kind": "gt_database", "format": 2}'),
             names=np.array([{"x": 1}], dtype=object))
    with pytest.raises(derived_files.NotADerivedFile, match="not a readable sparsevox derived file"):
        derived_files.read_derived_file(str(path))
    with pytest.raises(TypeError, match="holds Python objects"):
        derived_files.write_derived_file(str(tmp_path / "x.npz"), {}, {"names": np.array([None], dtype=object)})


def test_a_class_absent_from_the_gt_database_is_reported(database, tmp_path):
    cars = NuScenesDataset(str(database), VERSION, VAL_SPLIT, num_sweeps=1, class_names=["car"])
    ensure_gt_database(cars, str(tmp_path / "gt.npz"))
    with pytest.warns(UserWarning, match=r"holds no bus objects: none will be pasted"):
        GTSampler(str(tmp_path / "gt.npz"), {"car": 1, "bus": 2}, ["car", "bus"])
