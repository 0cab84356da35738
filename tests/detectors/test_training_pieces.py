"""The pieces of ``train()`` on their own, without a dataset on disk: one epoch over in-memory frames,
its checkpoints and log records, and the optimizer's one-cycle schedule against its formula."""
import json
import math
from pathlib import Path

import numpy as np
import torch

from datasets.base import DetectionDataset, count_points_in_boxes
from detectors.checkpoints import load_checkpoint
from detectors.experiment import OptimizerConfig, load_centerpoint_config
from detectors.training import TrainingLog, build_optimizer, build_training_run, train_one_epoch

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")
TINY = ["dataset.num_sweeps=1", "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
        "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]",
        "model.head.shared_channels=8", "model.head.head_channels=8", "train.gt_sampling=null", "train.log_every=1"]


class InMemoryFrames(DetectionDataset):
    """A few frames of one car and one pedestrian each, with points on and around them."""
    point_features = ("x", "y", "z", "intensity", "time")

    def __init__(self, class_names, count: int, seed: int = 0):
        self.class_names = list(class_names)
        rng = np.random.default_rng(seed)
        self.frames = []
        for index in range(count):
            boxes = np.array([[5.0 + index, 2.0, -0.5, 4.5, 1.9, 1.6, 0.3, 0.0, 0.0],
                              [-8.0, -3.0 - index, -0.8, 0.7, 0.7, 1.8, 0.0, 0.0, 0.0]], dtype=np.float32)
            inside = np.concatenate([box[:3] + rng.uniform(-0.4, 0.4, (200, 3)) * box[3:6] for box in boxes])
            scatter = rng.uniform([-40, -40, -2, 0, 0], [40, 40, 2, 1, 0], (800, 5))
            points = np.concatenate([np.c_[inside, rng.uniform(0, 1, (len(inside), 1)), np.zeros(len(inside))],
                                     scatter]).astype(np.float32)
            self.frames.append({"points": points, "gt_boxes": boxes,
                                "gt_labels": np.array([self.class_names.index("car"),
                                                       self.class_names.index("pedestrian")], dtype=np.int64),
                                "num_points_in_gt": count_points_in_boxes(points, boxes), "meta": {"index": index}})

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict:
        return self.frames[index]

    def label_sets(self) -> list[set[str]]:
        return [{"car", "pedestrian"} for _ in self.frames]


def test_one_epoch_over_in_memory_frames_steps_checkpoints_and_logs(tmp_path):
    config = load_centerpoint_config(CONFIG, [*TINY, "train.epochs=2", "train.batch_size=2",
                                              "train.checkpoint_every=2"])
    frames = InMemoryFrames(config.model.head.class_names, count=5)
    run = build_training_run(config, str(tmp_path), frames=frames)
    assert len(run.loader) == 3 and run.steps == 0 and run.start_epoch == 0
    initial = {key: value.clone() for key, value in run.model.state_dict().items()}
    log = TrainingLog(run.log_path)

    first = train_one_epoch(run, 0, log)
    assert first.steps == 3 and not first.stopped and run.steps == 3
    assert math.isfinite(first.last_loss) and first.last_loss == run.last_loss
    assert any(not torch.equal(initial[key], value) for key, value in run.model.state_dict().items())
    saved = load_checkpoint(run.checkpoint_path)  # checkpoint_every=2: written after step 2, not at the epoch's end
    assert (saved["epoch"], saved["step_in_epoch"], saved["steps"], saved["batches_per_epoch"]) == (0, 2, 2, 3)
    records = [json.loads(line) for line in Path(run.log_path).read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in records] == [(0, 1), (0, 2), (0, 3)]
    assert all(math.isfinite(r["loss"]) and r["step_time"] > 0 and r["data_time"] >= 0 for r in records)

    second = train_one_epoch(run, 1, log, max_steps=4)  # stops after one step of the second epoch
    assert second.steps == 1 and second.stopped and run.steps == 4 and math.isfinite(second.last_loss)
    saved = load_checkpoint(run.checkpoint_path)
    assert (saved["epoch"], saved["step_in_epoch"], saved["steps"]) == (1, 1, 4)


def test_the_optimizer_follows_the_one_cycle_formula():
    settings = OptimizerConfig(lr=0.02, weight_decay=0.05, pct_start=0.3, div_factor=8.0)
    total = 20
    optimizer, scheduler = build_optimizer(torch.nn.Linear(3, 2), settings, total)
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.05 and group["betas"][1] == 0.99
    rates, momenta = [], []
    for _ in range(total):
        rates.append(group["lr"])
        momenta.append(group["betas"][0])
        optimizer.step()
        scheduler.step()

    def cosine(start, end, fraction):
        return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))

    # Warm-up over pct_start of the steps from lr / div_factor to lr, then down to lr / div_factor / 1e4;
    # the momentum (Adam's beta1) moves the other way between 0.95 and 0.85.
    start, peak = settings.lr / settings.div_factor, settings.lr
    floor = start / 1e4
    turn = settings.pct_start * total - 1
    for step, (rate, momentum) in enumerate(zip(rates, momenta)):
        if step <= turn:
            fraction = step / turn
            expected, expected_momentum = cosine(start, peak, fraction), cosine(0.95, 0.85, fraction)
        else:
            fraction = (step - turn) / (total - 1 - turn)
            expected, expected_momentum = cosine(peak, floor, fraction), cosine(0.85, 0.95, fraction)
        assert math.isclose(rate, expected, rel_tol=1e-9, abs_tol=1e-12), (step, rate, expected)
        assert math.isclose(momentum, expected_momentum, rel_tol=1e-9), (step, momentum, expected_momentum)
    assert math.isclose(rates[0], start) and math.isclose(max(rates), peak) and rates.index(max(rates)) == round(turn)


class CountingFrames(InMemoryFrames):
    """InMemoryFrames that record which frames were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = []

    def __getitem__(self, index: int) -> dict:
        self.read.append(index)
        return super().__getitem__(index)


def test_a_resumed_epoch_reads_only_the_frames_after_the_batches_trained_on(tmp_path):
    config = load_centerpoint_config(CONFIG, [*TINY, "train.epochs=2", "train.batch_size=2"])
    frames = CountingFrames(config.model.head.class_names, count=5)
    run = build_training_run(config, str(tmp_path), frames=frames)
    run.sampler.set_epoch(1)
    order = list(run.sampler)  # the epoch's order, seeded: what an uninterrupted epoch reads
    run.start_epoch, run.skip = 1, 2  # resumed after 2 of the epoch's 3 batches
    result = train_one_epoch(run, 1, TrainingLog(run.log_path))
    assert result.steps == 1 and run.steps == 1
    assert frames.read == order[4:]  # the 2 skipped batches (4 frames) are not read again
