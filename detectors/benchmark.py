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
from dataclasses import dataclass

import torch


@dataclass
class TrainingResult:
    backend: str
    workers: int
    batch_size: int
    steps: int
    step_s: float       # median compute time of a step
    data_s: float       # median wait for the step's batch

    @property
    def data_share(self) -> float:
        """Data time as a share of the whole step (wait + compute)."""
        return self.data_s / (self.data_s + self.step_s)


def benchmark_training(config_path: str, overrides=(), backends=("torch", "spconv"), workers=(0, 2),
                       steps: int = 6, threads: int = 2) -> list[TrainingResult]:
    """``steps`` + 1 training steps of the config per (backend, workers); medians of the last ``steps``."""
    from detectors.experiment import load_centerpoint_config
    from detectors.training import train

    torch.set_num_threads(threads)
    results = []
    for backend in backends:
        for count in workers:
            config = load_centerpoint_config(config_path, [*overrides, f"model.backbone_3d.backend={backend}",
                                                           f"train.num_workers={count}", "train.log_every=1"])
            with tempfile.TemporaryDirectory() as run_dir:
                train(config, run_dir, max_steps=steps + 1, progress=False)
                with open(os.path.join(run_dir, "log.jsonl")) as f:
                    records = [json.loads(line) for line in f if '"step_time"' in line][1:]
            results.append(TrainingResult(backend, count, config.train.batch_size, len(records),
                                          statistics.median(r["step_time"] for r in records),
                                          statistics.median(r["data_time"] for r in records)))
    return results


def training_table(results: list[TrainingResult]) -> str:
    lines = ["| backend | DataLoader workers | batch | steps | step s | data wait s | data / (data + step) | "
             "per frame: step s, data s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.backend} | {r.workers} | {r.batch_size} | {r.steps} | {r.step_s:.2f} | {r.data_s:.2f} | "
                     f"{100 * r.data_share:.1f}% | {r.step_s / r.batch_size:.2f}, {r.data_s / r.batch_size:.2f} |")
    return "\n".join(lines)
