"""GT sampling pastes whole objects without collisions; CBGS balances the classes."""
import numpy as np

from datasets.boxes import points_in_box
from datasets.gt_sampling import GTSampler, build_gt_database, cbgs_indices


class Frames:
    """Two frames: one with a car and a pedestrian, one empty apart from ground points."""
    class_names = ["car", "pedestrian"]

    def __init__(self):
        rng = np.random.default_rng(0)
        car = np.array([10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3, 0, 0], dtype=np.float32)
        ped = np.array([0.0, 8.0, 0.0, 0.7, 0.7, 1.8, 0.0, 0, 0], dtype=np.float32)
        car_points = rng.uniform(-0.45, 0.45, (200, 3)) * car[3:6] @ np.array(
            [[np.cos(0.3), np.sin(0.3), 0], [-np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]]) + car[:3]
        ped_points = rng.uniform(-0.45, 0.45, (40, 3)) * ped[3:6] + ped[:3]
        ground = np.column_stack([rng.uniform(-30, 30, (500, 2)), np.full(500, -1.0)])
        self.items = [
            {"points": np.column_stack([np.concatenate([car_points, ped_points, ground]), np.ones(740)]).astype(
                np.float32), "gt_boxes": np.stack([car, ped]), "gt_labels": np.array([0, 1])},
            {"points": np.column_stack([ground + 0.5, np.ones(500)]).astype(np.float32),
             "gt_boxes": np.zeros((0, 9), np.float32), "gt_labels": np.zeros(0, np.int64)},
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_database_and_pasting(tmp_path):
    frames = Frames()
    counts = build_gt_database(frames, str(tmp_path / "db.npz"), min_points=5)
    assert counts == {"car": 1, "pedestrian": 1}
    sampler = GTSampler(str(tmp_path / "db.npz"), {"car": 1, "pedestrian": 1}, frames.class_names)
    empty = frames[1]
    points, boxes, labels = sampler(empty["points"], empty["gt_boxes"], empty["gt_labels"], np.random.default_rng(0))
    assert labels.tolist() == [0, 1] and len(boxes) == 2
    for box, expected in zip(boxes, (200, 40)):
        assert int(points_in_box(points, box, margin=1e-4).sum()) == expected  # the object, nothing else
    # Pasting into the frame the objects came from collides with the originals: nothing is added.
    full = frames[0]
    again = sampler(full["points"], full["gt_boxes"], full["gt_labels"], np.random.default_rng(0))
    assert len(again[1]) == 2 and len(again[0]) == len(full["points"])


def test_cbgs_balances_classes():
    label_sets = [{"car"}] * 90 + [{"car", "pedestrian"}] * 5 + [{"bicycle"}] * 5
    indices = cbgs_indices(label_sets, ["car", "pedestrian", "bicycle"], seed=0)
    frames_with = {name: sum(name in label_sets[i] for i in indices) for name in ("pedestrian", "bicycle")}
    assert abs(len(indices) - 99) <= 3
    assert frames_with["pedestrian"] >= 30 and frames_with["bicycle"] >= 30  # up from 5 each


def test_cbgs_keeps_every_present_class_when_frames_are_fewer_than_classes():
    """3 frames, 6 classes: ~0.5 frame per class must not round every class away (0 training steps)."""
    label_sets = [{"car", "truck"}, {"pedestrian", "barrier"}, {"bus", "traffic_cone"}]
    classes = ["car", "truck", "pedestrian", "barrier", "bus", "traffic_cone"]
    indices = cbgs_indices(label_sets, classes)
    assert len(indices) == 6
    assert {name for i in indices for name in label_sets[i]} == set(classes)
