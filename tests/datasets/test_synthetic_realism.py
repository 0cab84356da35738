"""The realism report's statistics (on hand-made clouds and a tiny synthetic world, against independent
computations) and the sim-to-real score (against the real key frame's own boxes)."""
import json

import numpy as np
import pytest

from datasets.realism import (
    BINS,
    GROUND_Z,
    LabelledFrame,
    cloud_statistics,
    real_keyframe,
    realism_report,
    sim_to_real,
    statistics_distance,
    synthetic_keyframes,
    wasserstein_from_histograms,
)


def plane_and_wall(ground_points=3000, wall_points=1000, intensity=10.0, shift=0.0):
    rng = np.random.default_rng(0)
    ground = np.column_stack([rng.uniform(5, 30, ground_points), rng.uniform(-10, 10, ground_points),
                              np.full(ground_points, GROUND_Z + shift), np.full(ground_points, intensity)])
    wall = np.column_stack([np.full(wall_points, 20.0), rng.uniform(-10, 10, wall_points),
                            rng.uniform(-1.0, 3.0, wall_points) + shift, np.full(wall_points, intensity)])
    return np.concatenate([ground, wall])


def test_statistics_of_a_plane_and_a_wall():
    stats = cloud_statistics([LabelledFrame(plane_and_wall())])
    assert stats.points == 4000
    assert stats.ground_share == pytest.approx(0.75)
    for name in BINS:
        assert stats.histograms[name].sum() == pytest.approx(1.0)
    assert stats.percentiles["intensity"] == [10.0, 10.0, 10.0]


def test_histogram_distance_is_the_earth_movers_distance():
    """Oracle: scipy's Wasserstein distance on the raw samples, for values that sit on bin starts."""
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    edges = BINS["z"]
    a = rng.choice(edges[:20], 5000)
    b = rng.choice(edges[10:40], 5000)
    ha, _ = np.histogram(a, edges)
    hb, _ = np.histogram(b, edges)
    assert wasserstein_from_histograms(ha / ha.sum(), hb / hb.sum(), edges) == pytest.approx(
        wasserstein_distance(a, b), rel=1e-9)
    # shifting a cloud up by 1 m moves its z distribution by exactly 1 m
    low = cloud_statistics([LabelledFrame(plane_and_wall())])
    high = cloud_statistics([LabelledFrame(plane_and_wall(shift=1.0))])
    assert statistics_distance(high, low)["z"] == pytest.approx(1.0, abs=1e-9)
    assert all(v in (0.0, None) for v in statistics_distance(low, low).values())  # None: no cars to compare


def test_points_per_object_match_the_devkit_counts_on_a_tiny_world(tmp_path, monkeypatch):
    """A one-scene world: the report's per-band median points per car match the medians of the
    num_lidar_pts the devkit reads from the database (the writer's own count).

    The sensor sits level here: the report counts in the LiDAR frame with the boxes upright there (as it
    must for the real key frame, whose boxes have a yaw only), the writer in the world, and under the
    synthetic mount's 1.4 degree tilt the road returns at a box's low edge fall into the LiDAR-frame box
    (7 of 32 for a car at 21 m)."""
    from nuscenes.nuscenes import NuScenes

    from datasets import synthetic_world
    from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database
    from datasets.realism import DISTANCE_BANDS

    monkeypatch.setattr(synthetic_world, "MOUNT_TILT", (0.0, 0.0))
    monkeypatch.setattr(synthetic_world, "MOUNT_JITTER", 0.0)
    make_synthetic_database(str(tmp_path), scenes=1, seed=3, keyframes_per_scene=2, sweeps=False)
    frames = synthetic_keyframes(str(tmp_path), TRAIN_SPLIT)
    stats = cloud_statistics(frames)
    assert stats.points == 32 * 1084
    nusc = NuScenes("v1.0-synthetic", str(tmp_path), verbose=False)
    from datasets.nuscenes_dataset import NuScenesDataset
    infos = NuScenesDataset(str(tmp_path), "v1.0-synthetic", TRAIN_SPLIT, num_sweeps=1).infos
    by_band = [[] for _ in DISTANCE_BANDS]
    for info in infos:
        sample = nusc.get("sample", info.token)
        for box, name, token in zip(info.gt_boxes, info.gt_names, sample["anns"]):
            if name != "car":
                continue
            count = nusc.get("sample_annotation", token)["num_lidar_pts"]
            distance = np.hypot(box[0], box[1])
            for band, (low, high) in enumerate(DISTANCE_BANDS):
                if low <= distance < high:
                    by_band[band].append(count)
    assert sum(map(len, by_band)) >= 5
    for band, counts in enumerate(by_band):
        if counts:
            median = np.median(counts)  # the road's 1-4 cm waves may move a return across a box's bottom
            assert abs(stats.points_per_object["car"][band] - median) <= max(1.0, 0.02 * median), band
        else:
            assert stats.points_per_object["car"][band] is None


def test_the_report_writes_table_numbers_and_plots(tmp_path, real_file):
    real_file("nuscenes/keyframe_boxes.json")
    real_dir = str(real_file("nuscenes/keyframe_boxes.json").parents[1])
    key, counts = real_keyframe(real_dir)
    synthetic = LabelledFrame(plane_and_wall(), np.zeros((0, 7)), [])
    report = realism_report({"synthetic": [synthetic], "real key frame": [key]}, "real key frame", str(tmp_path))
    saved = json.loads((tmp_path / "realism.json").read_text())
    assert saved["distances"]["synthetic"] == report["distances"]["synthetic"]
    assert (tmp_path / "bird_eye.png").stat().st_size > 10_000
    assert "points per frame" in (tmp_path / "realism.md").read_text()
    assert saved["statistics"]["real key frame"]["points"] == 34688
    # the real boxes hold their annotated points: the report's counts are the annotation's
    cars = [c for c, n, b in zip(counts, key.names, key.boxes) if n == "car" and 20 <= np.hypot(*b[:2]) < 30]
    assert report["statistics"]["real key frame"]["points_per_object"]["car"][2] == pytest.approx(
        np.median(cars), abs=max(3, 0.1 * np.median(cars)))


def test_sim_to_real_counts_found_objects_and_false_positives(real_file):
    real_dir = str(real_file("nuscenes/keyframe_boxes.json").parents[1])
    key, counts = real_keyframe(real_dir)
    counted = (np.hypot(key.boxes[:, 0], key.boxes[:, 1]) <= 50) & (counts >= 5)

    def perfect(points):
        assert points.shape[1] == 5 and not points[:, 4].any()  # key frame only: time lag 0
        return key.boxes, np.ones(len(key.boxes)), key.names

    score = sim_to_real(perfect, real_dir)
    assert score["recall"] == 1.0 and score["false_positives"] == 0 and score["objects"] == int(counted.sum())
    assert score["objects"] >= 20

    def shifted(points):  # every box 40 m off, plus one low-score box that must be ignored
        boxes = key.boxes.copy()
        boxes[:, 0] += 40.0
        return np.vstack([boxes, key.boxes[:1]]), np.r_[np.full(len(boxes), 0.5), 0.1], key.names + key.names[:1]

    score = sim_to_real(shifted, real_dir)
    within = np.hypot(key.boxes[:, 0] + 40.0, key.boxes[:, 1]) <= 50
    assert score["found"] == 0 and score["recall"] == 0.0
    assert score["false_positives"] == int(within.sum()) > 0

    def wrong_class(points):
        return key.boxes, np.ones(len(key.boxes)), ["car" if n != "car" else "pedestrian" for n in key.names]

    score = sim_to_real(wrong_class, real_dir)
    assert score["found"] == 0 and score["false_positives"] > 0


def test_sim_to_real_scores_the_same_detections_at_each_operating_point(real_file):
    real_dir = str(real_file("nuscenes/keyframe_boxes.json").parents[1])
    key, counts = real_keyframe(real_dir)
    counted = (np.hypot(key.boxes[:, 0], key.boxes[:, 1]) <= 50) & (counts >= 5)
    confident = np.arange(len(key.boxes)) % 2 == 0
    away = key.boxes.copy()
    away[:, 0] += 40.0  # matches nothing (see above)
    away_within = int((np.hypot(away[:, 0], away[:, 1]) <= 50).sum())
    calls = []

    def graded(points):  # the annotated boxes at 0.6 or 0.35, and every box again 40 m off at 0.45
        calls.append(len(points))
        return (np.vstack([key.boxes, away]), np.r_[np.where(confident, 0.6, 0.35), np.full(len(away), 0.45)],
                key.names + key.names)

    score = sim_to_real(graded, real_dir)
    assert len(calls) == 1  # detected once, scored at every threshold
    points = {p["score_threshold"]: (p["found"], p["false_positives"]) for p in score["by_score"]}
    everything, sure = int(counted.sum()), int((counted & confident).sum())
    assert everything > sure > 0 and away_within > 0
    assert points == {0.2: (everything, away_within), 0.3: (everything, away_within),
                      0.4: (sure, away_within), 0.5: (sure, 0)}
    assert (score["found"], score["false_positives"]) == points[0.2]
    with pytest.raises(ValueError, match="score thresholds must lie in"):
        sim_to_real(graded, real_dir, other_thresholds=(30,))  # a percentage given for a score


def test_the_tool_loads_a_checkpoint_through_the_safe_loader_before_anything_else(tmp_path):
    """A pickled payload in --checkpoint is refused (weights only) with one error line, before the tool reads
    the database or the real scans (neither exists here), and the payload never runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    root = Path(__file__).resolve().parents[2]
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"model": {"weight": Payload()}}, tmp_path / "hostile.pt")
    completed = subprocess.run(
        [sys.executable, str(root / "tools" / "realism.py"), "--database", str(tmp_path / "absent"),
         "--real-data", str(tmp_path / "absent_real"), "--out", str(tmp_path / "out"),
         "--checkpoint", str(tmp_path / "hostile.pt")],
        cwd=root, env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"), capture_output=True, text=True,
        timeout=300)
    assert not marker.exists()
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    errors = [line for line in completed.stderr.splitlines() if line.startswith("realism.py: error: ")]
    assert len(errors) == 1 and "hostile.pt" in errors[0], completed.stderr
