"""Training throughput: how a training step's time splits into waiting for data and the step itself.

``train()`` logs both per step (``data_time``: the wait for the DataLoader; ``step_time``: forward,
loss, backward and the optimizer); this runs a few steps of a config per backend and DataLoader
worker count and reports their medians, the first step (warm-up, worker start) left out.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from backbones.backends import available_backends, get_backend
from benchmarks.voxelizer import device_waiter, thread_counts


@dataclass
class TrainingResult:
    backend: str
    workers: int
    batch_size: int     # per process
    steps: int
    step_s: float       # median compute time of a step (rank 0's: waits for the other processes included)
    data_s: float       # median wait for the step's batch
    processes: int = 1
    batch_norm: str = "global"

    @property
    def data_share(self) -> float:
        """Data time as a share of the whole step (wait + compute)."""
        return self.data_s / (self.data_s + self.step_s)


def benchmark_training(config_path: str, overrides=(), backends=None, workers=(0, 2), steps: int = 6,
                       threads: int = 2, layouts=None, rounds: int = 1) -> list[TrainingResult]:
    """``steps`` + 1 training steps of the config per (backend, workers, layout); medians of the last ``steps``.

    ``layouts``: (processes, batch_norm) pairs, each splitting the config's global batch (processes x
    batch_size) evenly over its processes (batch_norm None: the config's); None: the config's own layout.
    ``rounds``: the whole set again, in the same order, so that the layouts interleave in time.
    """
    from detectors.experiment import load_centerpoint_config
    from detectors.training import train

    base = load_centerpoint_config(config_path, overrides).train
    global_batch = base.processes * base.batch_size
    layouts = [(base.processes, base.batch_norm)] if layouts is None else \
        [(processes, batch_norm or base.batch_norm) for processes, batch_norm in layouts]
    for processes, _ in layouts:
        if global_batch % processes:
            raise ValueError(f"{processes} processes cannot split the config's global batch of {global_batch} "
                             f"frames evenly")
    results = []
    for _ in range(rounds):
        for _ in thread_counts([threads]):
            for backend in available_backends() if backends is None else backends:
                for count in workers:
                    for processes, batch_norm in layouts:
                        config = load_centerpoint_config(config_path, [
                            *overrides, f"model.backbone_3d.backend={backend}", f"train.num_workers={count}",
                            "train.log_every=1", f"train.processes={processes}", f"train.batch_norm={batch_norm}",
                            f"train.batch_size={global_batch // processes}"])
                        with tempfile.TemporaryDirectory() as run_dir:
                            if config.train.gt_sampling is not None:  # not over the config's own database
                                config.train.gt_sampling.database = os.path.join(run_dir, "gt_database.npz")
                            train(config, run_dir, max_steps=steps + 1, progress=False)
                            with open(os.path.join(run_dir, "log.jsonl")) as f:
                                records = [json.loads(line) for line in f if '"step_time"' in line][1:]
                        results.append(TrainingResult(backend, count, config.train.batch_size, len(records),
                                                      statistics.median(r["step_time"] for r in records),
                                                      statistics.median(r["data_time"] for r in records),
                                                      processes, batch_norm))
    return results


def training_table(results: list[TrainingResult]) -> str:
    lines = ["| backend | processes | BatchNorm | DataLoader workers | batch per process | steps | step s | "
             "data wait s | data / (data + step) | per frame: step s, data s |", "|---" * 10 + "|"]
    for r in results:
        frames = r.batch_size * r.processes
        lines.append(f"| {r.backend} | {r.processes} | {r.batch_norm if r.processes > 1 else '-'} | {r.workers} | "
                     f"{r.batch_size} | {r.steps} | {r.step_s:.2f} | {r.data_s:.2f} | {100 * r.data_share:.1f}% | "
                     f"{r.step_s / frames:.2f}, {r.data_s / frames:.2f} |")
    return "\n".join(lines)


DETECTOR_STAGES = ("voxelize", "backbone 3D", "BEV (height compression + SECOND-FPN)", "head", "decode + NMS")


@dataclass
class DetectorResult:
    case: str
    backend: str
    precision: str
    threads: int
    points: int
    voxels: int
    boxes: int
    stage_ms: dict          # stage name -> median ms, stages run one after the other
    predict_ms: float       # median of the whole CenterPoint.predict
    device: str = "cpu"


def _staged_predict(model, clouds) -> tuple[dict[str, float], list]:
    """CenterPoint.predict cut into its stages: seconds of each and the same result as predict (on a GPU,
    each stage's time lasts until its kernels have finished)."""
    from detectors.center_head import decode

    wait = device_waiter(next(model.parameters()).device)
    wait()
    seconds, clock = {}, time.perf_counter()

    def lap(stage):
        nonlocal clock
        wait()
        now = time.perf_counter()
        seconds[stage], clock = now - clock, now

    with torch.no_grad():
        with model.inference_autocast():
            tensor, _ = model.voxelizers["test"].batch(clouds)
            lap(DETECTOR_STAGES[0])
            sparse = model.backbone_3d(tensor).out
            lap(DETECTOR_STAGES[1])
            bev = model.bev_backbone(model.bev_map(sparse))
            lap(DETECTOR_STAGES[2])
            predictions = model.head(bev)
            lap(DETECTOR_STAGES[3])
        head = model.config.head
        result = decode(predictions, head.class_groups, head.class_names, model.grid, model.config.decode)
        lap(DETECTOR_STAGES[4])
    return seconds, result


def benchmark_detector(cases: list[tuple[str, str, str]], threads=(1, 2), repeats: int = 5,
                       backends=None, precisions=("fp32",), seed: int = 0, device="cpu") -> list[DetectorResult]:
    """``CenterPoint.predict`` on one cloud per (name, config path, cloud path), eval mode, weights
    initialised from ``seed``: per stage and end to end, medians of ``repeats`` runs after a warm-up,
    the (backend, precision) variants interleaved run by run. Precision 'bf16' is the config's
    ``model.inference_precision`` switch. On a CUDA ``device`` the model and the cloud live on the GPU."""
    from backbones.sparse_modules import set_backend
    from datasets.point_files import read_points
    from detectors.centerpoint import CenterPoint
    from detectors.experiment import load_centerpoint_config

    backends = available_backends() if backends is None else backends
    results = []
    for name, config_path, cloud_path in cases:
        config = load_centerpoint_config(config_path)
        torch.manual_seed(seed)
        model = CenterPoint(config.model).eval().to(device)
        # spconv's CPU kernels take no bfloat16: there its rows are fp32 only.
        variants = [(backend, precision) for backend in backends for precision in precisions
                    if precision == "fp32" or get_backend(backend).runs_bfloat16(torch.device(device).type)]
        points = read_points(cloud_path)[:, :config.model.num_point_features]
        clouds = [torch.as_tensor(points, device=device)]
        wait = device_waiter(device)
        voxels = model.voxelizers["test"].batch(clouds)[0].num_sites
        for count in thread_counts(threads):
            samples = {variant: {"stages": [], "predict": [], "boxes": 0} for variant in variants}
            for repeat in range(repeats + 1):  # the first round warms up
                for backend, precision in variants:
                    set_backend(model, backend)
                    model.config.inference_precision = precision
                    sample = samples[backend, precision]
                    stage_seconds, result = _staged_predict(model, clouds)
                    start = time.perf_counter()
                    model.predict(clouds)
                    wait()
                    predict_seconds = time.perf_counter() - start
                    if repeat:
                        sample["stages"].append(stage_seconds)
                        sample["predict"].append(predict_seconds)
                    sample["boxes"] = len(result[0]["scores"])
            for (backend, precision), sample in samples.items():
                stage_ms = {stage: 1e3 * statistics.median(s[stage] for s in sample["stages"])
                            for stage in DETECTOR_STAGES}
                results.append(DetectorResult(name, backend, precision, count, len(points), voxels, sample["boxes"],
                                              stage_ms, 1e3 * statistics.median(sample["predict"]), str(device)))
    return results


def detector_table(results: list[DetectorResult]) -> str:
    header = " | ".join(f"{stage} ms" for stage in DETECTOR_STAGES)
    lines = [f"| device | case | points → voxels | backend | precision | threads | {header} | predict ms | boxes |",
             "|---|---|---|---|---|---|" + "---|" * len(DETECTOR_STAGES) + "---|---|"]
    for r in results:
        stages = " | ".join(f"{r.stage_ms[stage]:.1f}" for stage in DETECTOR_STAGES)
        lines.append(f"| {r.device} | {r.case} | {r.points} → {r.voxels} | {r.backend} | {r.precision} | {r.threads} | "
                     f"{stages} | "
                     f"{r.predict_ms:.1f} | {r.boxes} |")
    return "\n".join(lines)
