"""Splits and data that must exist: an unknown, undefined or empty split, a root that is not a
database of the configured type, a damaged table, are one clear error each, never every frame, no
frame, or a devkit assertion."""
import json
import shutil

import pytest
from conftest import REAL_DATA

from datasets.kitti_dataset import KittiDataset, split_ids
from datasets.kitti_eval import evaluate_detector_on_kitti
from datasets.nuscenes_dataset import NuScenesDataset, split_scene_names
from datasets.nuscenes_writer import TRAIN_SPLIT, VAL_SPLIT, make_synthetic_database

VERSION = "v1.0-synthetic"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuscenes")
    make_synthetic_database(str(root), scenes=2, seed=0, keyframes_per_scene=2)
    return root


@pytest.fixture
def database(pristine, tmp_path):
    """A copy of the tables; the point folders are links to the pristine ones (never written here)."""
    root = tmp_path / "db"
    shutil.copytree(pristine / VERSION, root / VERSION)
    shutil.copytree(pristine / "maps", root / "maps")
    for folder in ("samples", "sweeps"):
        (root / folder).symlink_to(pristine / folder)
    return root


def load(root, split=TRAIN_SPLIT, version=VERSION, **options):
    return NuScenesDataset(str(root), version, split, num_sweeps=1, cache_dir=str(root), **options)


def test_unknown_nuscenes_split_lists_the_splits_with_scenes(database):
    with pytest.raises(ValueError, match=r"unknown split 'synthetic_vall' for .*; splits with scenes here: "
                                         r"synthetic_train, synthetic_val$"):
        load(database, "synthetic_vall")
    assert len(load(database, VAL_SPLIT)) == 2 and len(load(database, TRAIN_SPLIT)) == 2


def test_a_predefined_split_without_scenes_here_is_an_error(database):
    # before: 'val' (real nuScenes scene names) gave 0 frames, and evaluation reported mAP 0 with exit code 0
    with pytest.raises(ValueError, match=r"split 'val' has no scenes in .*v1.0-synthetic; splits with scenes here: "
                                         r"synthetic_train, synthetic_val"):
        load(database, "val")


def test_an_empty_custom_split_is_an_error(database):
    splits = database / VERSION / "splits.json"
    splits.write_text(json.dumps({**json.loads(splits.read_text()), "nothing": []}))
    with pytest.raises(ValueError, match=r"split 'nothing' has no scenes"):
        load(database, "nothing")


def test_one_scene_database_has_an_empty_val_split(tmp_path):
    make_synthetic_database(str(tmp_path), scenes=1, seed=0, keyframes_per_scene=1)
    with pytest.raises(ValueError, match=r"split 'synthetic_val' has no scenes .* here: synthetic_train$"):
        load(tmp_path, VAL_SPLIT)


def test_custom_split_naming_absent_scenes_or_shadowing_a_predefined_one(database):
    splits = database / VERSION / "splits.json"
    original = json.loads(splits.read_text())
    splits.write_text(json.dumps({**original, TRAIN_SPLIT: original[TRAIN_SPLIT] + ["synthetic-0099"]}))
    with pytest.raises(ValueError, match=r"names 1 scene\(s\) the database lacks: synthetic-0099"):
        load(database, TRAIN_SPLIT)   # before: the typo'd scene silently dropped
    splits.write_text(json.dumps({**original, "train": original[TRAIN_SPLIT]}))
    with pytest.raises(ValueError, match=r"shadowed by the devkit's predefined split of that name: rename it"):
        load(database, "train")
    splits.write_text(json.dumps({TRAIN_SPLIT: "synthetic-0000"}))
    with pytest.raises(ValueError, match=r"splits.json: expected a JSON object mapping split names to lists"):
        load(database, TRAIN_SPLIT)
    splits.write_text("{not json")
    with pytest.raises(ValueError, match=r"splits.json: not valid JSON"):
        load(database, TRAIN_SPLIT)


def test_devkit_agrees_on_the_split_scenes(pristine):
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.splits import get_scenes_of_split

    nusc = NuScenes(VERSION, str(pristine), verbose=False)
    for split in (TRAIN_SPLIT, VAL_SPLIT):
        assert split_scene_names(str(pristine), VERSION, split) == get_scenes_of_split(split, nusc)


def test_a_root_that_is_not_a_nuscenes_database_says_so(database, tmp_path, real_file):
    with pytest.raises(ValueError, match=r"is not a nuScenes database of version 'v1.0-mini': no .*v1.0-mini folder; "
                                         r"it holds version\(s\) v1.0-synthetic \(set dataset.version\)$"):
        load(database, version="v1.0-mini")   # before: the devkit's AssertionError
    real_file("kitti/velodyne/000000.bin")
    with pytest.raises(ValueError, match=r"looks like a KITTI object folder \(velodyne/\): set dataset.type kitti"):
        load(REAL_DATA / "kitti")
    with pytest.raises(FileNotFoundError, match=r"dataset root .*nowhere is not a folder"):
        load(tmp_path / "nowhere")
    (database / "maps" / "synthetic-city.png").unlink()
    with pytest.raises(ValueError, match=r"map file\(s\) maps/synthetic-city.png named in v1.0-synthetic/map.json "
                                         r"are missing"):
        load(database)   # before: the devkit's AssertionError
    (database / VERSION / "sample_data.json").unlink()
    with pytest.raises(ValueError, match=r"is not a complete nuScenes database: missing table\(s\) sample_data.json"):
        load(database)


def test_a_damaged_table_is_named(database):
    (database / VERSION / "ego_pose.json").write_text('[{"token": ')
    with pytest.raises(ValueError, match=r"ego_pose.json: not valid JSON"):
        load(database)


def test_class_names_must_be_detection_classes(database):
    with pytest.raises(ValueError, match=r"\['cars'\] not nuScenes detection classes; valid: \['car', "):
        load(database, class_names=["cars"])       # before: frames with no boxes at all
    with pytest.raises(ValueError, match=r"class_names must be a list of names, got the string 'car'"):
        load(database, class_names="car")
    with pytest.raises(ValueError, match=r"repeats a name"):
        load(database, class_names=["car", "pedestrian", "car"])
    with pytest.raises(ValueError, match=r"num_sweeps must be a whole number >= 1, got 1.5"):
        NuScenesDataset(str(database), VERSION, TRAIN_SPLIT, num_sweeps=1.5)


# ------------------------------------------------------------------------------------------- KITTI

@pytest.fixture
def kitti(tmp_path, real_file):
    """The two real KITTI frames with an ImageSets folder holding val = 000001."""
    real_file("kitti/velodyne/000001.bin")
    root = tmp_path / "kitti"
    for folder in ("velodyne", "label_2", "calib"):
        shutil.copytree(REAL_DATA / "kitti" / folder, root / folder)
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("000001\n")
    return root


def test_unknown_kitti_split_is_an_error_not_every_frame(kitti):
    assert split_ids(str(kitti), "val") == ["000001"]
    with pytest.raises(ValueError, match=r"unknown split 'vall': .*ImageSets has val \(or 'all' for every scan\)"):
        split_ids(str(kitti), "vall")   # before: None, i.e. every frame, training frames included
    with pytest.raises(ValueError, match=r"unknown split 'vall'"):
        evaluate_detector_on_kitti(None, str(kitti), "vall", ["Car"])
    assert split_ids(str(kitti), "all") == ["000000", "000001"]


def test_kitti_without_imagesets_needs_the_all_split(kitti):
    shutil.rmtree(kitti / "ImageSets")
    with pytest.raises(ValueError, match=r"split 'val' is undefined: .* has no ImageSets/ folder; add "
                                         r"ImageSets/val.txt \(one frame id a line\) or use split 'all'"):
        split_ids(str(kitti), "val")
    assert split_ids(str(kitti), "all") == ["000000", "000001"]


def test_empty_or_repeating_kitti_splits_are_errors(kitti):
    (kitti / "ImageSets" / "train.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"train.txt is empty: split 'train' has no frames"):
        split_ids(str(kitti), "train")
    (kitti / "ImageSets" / "train.txt").write_text("000000\n000001\n000000\n")
    with pytest.raises(ValueError, match=r"train.txt lists frame\(s\) 000000 more than once"):
        split_ids(str(kitti), "train")
    with pytest.raises(ValueError, match=r"list of KITTI frame ids for .* is empty"):
        KittiDataset(str(kitti), ids=[])


def test_a_root_that_is_not_a_kitti_folder_says_so(pristine, tmp_path):
    with pytest.raises(ValueError, match=r"is not a KITTI object folder: no velodyne/ .*it looks like a nuScenes "
                                         r"database: set dataset.type nuscenes"):
        KittiDataset(str(pristine))
    (tmp_path / "download" / "training" / "velodyne").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"it holds training/velodyne: use .*download/training as the root"):
        split_ids(str(tmp_path / "download"), "val")
    (tmp_path / "empty" / "velodyne").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty/velodyne holds no .bin scans"):
        KittiDataset(str(tmp_path / "empty"))


def test_a_partial_download_fails_at_construction(pristine, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(pristine, root)
    sweeps = sorted((root / "sweeps" / "LIDAR_TOP").iterdir())
    sweeps[0].unlink()
    assert len(load(root, VAL_SPLIT)) == 2   # the val scene does not read that sweep
    with pytest.raises(FileNotFoundError, match=rf"partial: 1 of the \d+ point files split '{TRAIN_SPLIT}' reads are "
                                                r"missing \(first: sweeps/LIDAR_TOP/.*\); a partial download\?"):
        NuScenesDataset(str(root), VERSION, TRAIN_SPLIT, num_sweeps=10, cache_dir=str(root))


def test_kitti_ids_without_zero_padding_are_named(kitti):
    (kitti / "ImageSets" / "val.txt").write_text("1\n")
    with pytest.raises(FileNotFoundError, match=r"names frame '1', which has no .*velodyne/1.bin "
                                                r"\(ids are zero-padded: 000001\)"):
        split_ids(str(kitti), "val")
