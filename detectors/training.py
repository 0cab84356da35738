"""Training CenterPoint: one process, ``torchrun`` or ``train.processes`` processes that :func:`train` starts
itself (DDP, gloo on CPU, nccl on CUDA; ``detectors.local_processes``).

A run folder holds the resolved config, ``log.jsonl`` (one JSON object per logged step), TensorBoard
scalars when tensorboard is installed, and checkpoints written atomically (temp file, fsync,
rename) and read without running code (``detectors.checkpoints``). ``resume`` restores model,
optimizer, scheduler, epoch, position in the epoch and the RNG states, so an interrupted run
continues as if it had not stopped (bitwise on CPU). A folder that holds a run is never written
over by accident (``detectors.run_folder``), and a run of nothing (0 steps) is an error, not a result.

:func:`train` orchestrates the pieces, each usable alone: :func:`build_training_run` (model, data,
optimizer and schedule, resumed state) → :func:`prepare_run_folder` → :func:`train_one_epoch` per
epoch (logging through :class:`TrainingLog`, checkpointing through :func:`save_training_checkpoint`)
→ PreciseBN (:func:`recompute_batch_norm_statistics`). Evaluation is ``detectors.evaluation``.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from atomic_files import write_atomically
from backbones.cross_process_batch_norm import convert_to_cross_process_batch_norm
from datasets.augmentation import Augmenter, sample_rng
from datasets.base import DetectionDataset, check_frame
from datasets.gt_sampling import GTSampler, cbgs_indices, ensure_gt_database, gt_database_key
from detectors.center_head import at_least_one
from detectors.center_targets import build_targets
from detectors.centerpoint import CenterPoint
from detectors.checkpoints import (
    load_checkpoint,
    load_model_weights,
    load_state_checked,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from detectors.config import to_dict
from detectors.experiment import CenterPointConfig, OptimizerConfig, split_frames
from detectors.local_processes import started_by_a_launcher, train_in_processes
from detectors.run_folder import CHECKPOINT, CONFIG, LOG, check_run_folder, hold_run_folder, move_aside


class TargetDataset(Dataset):
    """Frames (augmented when an Augmenter is given) with their CenterPoint targets, built here in
    the data pipeline. Augmentation draws from a generator seeded by (seed, epoch, index)."""

    def __init__(self, frames: DetectionDataset, model: CenterPoint, augmenter: Augmenter | None = None,
                 seed: int = 0, gt_sampler: GTSampler | None = None, min_points_in_gt: int = 0):
        self.frames = frames
        self.min_points_in_gt = min_points_in_gt
        self.head = model.config.head
        self.grid = model.grid
        self.augmenter, self.gt_sampler, self.seed, self.epoch = augmenter, gt_sampler, seed, 0
        if list(frames.class_names) != list(self.head.class_names):
            raise ValueError(f"dataset classes {frames.class_names} differ from the head's {self.head.class_names}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int):
        frame = self.frames[index]
        check_frame(frame, self.frames.class_names, self.frames.num_point_features, where=f"training frame {index}")
        points, boxes, labels = frame["points"], frame["gt_boxes"], frame["gt_labels"]
        if self.min_points_in_gt > 0:
            visible = frame["num_points_in_gt"] >= self.min_points_in_gt
            boxes, labels = boxes[visible], labels[visible]
        rng = sample_rng(self.seed, self.epoch, index)
        if self.gt_sampler is not None:
            points, boxes, labels = self.gt_sampler(points, boxes, labels, rng)
        if self.augmenter is not None:
            points, boxes = self.augmenter(points, boxes, rng)
        targets = build_targets(boxes, labels, self.head.class_groups, self.head.class_names,
                                self.grid, self.head.min_overlap, self.head.min_radius, self.head.max_objects)
        return points, targets


def collate(batch):
    """(list of (N, C) clouds, per group a dict of batched target tensors)."""
    clouds = [points for points, _ in batch]
    groups = len(batch[0][1])
    targets = [{key: torch.stack([sample[1][g][key] for sample in batch]) for key in batch[0][1][g]}
               for g in range(groups)]
    return clouds, targets


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def global_share(count: torch.Tensor) -> torch.Tensor:
    """This process's share of a loss divisor: the count over all processes (at least 1) / their number."""
    total = count.detach().clone()
    dist.all_reduce(total)
    return total.clamp_min(1) / dist.get_world_size()


def distributed_context() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


@dataclass
class TrainingRun:
    """Everything one training process steps: the model (``trainable`` is it, or its DDP wrapper), the
    data, the optimizer and its schedule, and where the run stands (``start_epoch``, ``skip`` batches
    of that epoch already trained on, ``steps`` optimizer steps in total). ``resumed_rng`` holds the
    RNG states of the checkpoint resumed from (None for a new run), restored by :func:`prepare_run_folder`."""
    config: CenterPointConfig
    run_dir: str
    device: torch.device
    rank: int
    world: int
    model: CenterPoint
    trainable: torch.nn.Module
    normaliser: Callable[[torch.Tensor], torch.Tensor]
    data: Dataset
    sampler: DistributedSampler
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    start_epoch: int = 0
    skip: int = 0
    steps: int = 0
    last_loss: float = float("nan")
    resumed_rng: dict | None = None

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.run_dir, CHECKPOINT)

    @property
    def log_path(self) -> str:
        return os.path.join(self.run_dir, LOG)

    @property
    def use_amp(self) -> bool:
        return self.device.type == "cuda"


@dataclass(frozen=True)
class EpochResult:
    steps: int          # optimizer steps done in this epoch (this call)
    last_loss: float    # the loss of the last of them (nan when none)
    stopped: bool       # max_steps was reached: the run ends here, checkpointed mid-epoch


def train(config: CenterPointConfig, run_dir: str, resume: bool = False, max_steps: int | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Train; returns {'steps': total steps done, 'last_loss': float, 'checkpoint': path, 'model': the model}.

    max_steps stops early (after that many optimizer steps in total), for tests and smoke runs.
    A ``run_dir`` that holds a run is refused unless ``resume`` (continue it, with the same config)
    or ``overwrite`` (start over; the old folder is renamed to ``RUN_DIR.replaced-<time>``), see
    ``detectors.run_folder``. A folder that another training is writing is refused (``hold_run_folder``).
    Every check (run folder, config, a training of at least one step, the checkpoint) is done before
    anything is written but the hold's lock file beside the folder.
    """
    check_training_request(config, max_steps)
    if config.train.processes > 1 and not started_by_a_launcher():
        check_run_folder(run_dir, to_dict(config), resume, overwrite)  # refused here, before any process starts
        result = train_in_processes(config, run_dir, resume, overwrite, max_steps, progress)
        model = CenterPoint(config.model)
        load_model_weights(model, result["checkpoint"])
        return {**result, "model": model}
    writes = os.environ.get("RANK", "0") == "0"
    if config.train.processes > 1 and writes and os.environ["WORLD_SIZE"] != str(config.train.processes):
        print(f"train.processes is {config.train.processes}, but the launcher started {os.environ['WORLD_SIZE']} "
              f"processes: the launcher's count holds (train.batch_size {config.train.batch_size} frames each)")
    joins_process_group = not dist.is_initialized()
    try:
        with hold_run_folder(run_dir) if writes else contextlib.nullcontext():  # rank 0 writes the run
            plan = check_run_folder(run_dir, to_dict(config), resume, overwrite)
            return _train(config, run_dir, plan, max_steps, progress)
    finally:
        if joins_process_group and dist.is_initialized():
            # Left to the interpreter's exit, the group's gloo threads are torn down while Python is half gone,
            # which now and then aborts a good run ("terminate called without an active exception", pytorch
            # #190489). Whatever still holds the group (the DDP wrapper, in a cycle or not) goes first.
            gc.collect()
            dist.destroy_process_group()


def _train(config: CenterPointConfig, run_dir: str, plan: str, max_steps: int | None, progress: bool) -> dict:
    run = build_training_run(config, run_dir, resume=plan == "resume", max_steps=max_steps)
    prepare_run_folder(run, plan)
    log = TrainingLog(run.log_path, _tensorboard(run_dir) if run.rank == 0 else None, enabled=run.rank == 0)
    for epoch in range(run.start_epoch, config.train.epochs):
        if train_one_epoch(run, epoch, log, max_steps, progress).stopped:
            return _finish(run, log)
        save_training_checkpoint(run, epoch + 1, 0)
    if config.train.precise_bn_batches > 0:
        batches = (clouds for clouds, _ in run.loader)
        recompute_batch_norm_statistics(run.model, batches, config.train.precise_bn_batches)
        save_training_checkpoint(run, config.train.epochs, 0)
    return _finish(run, log)


def check_training_request(config: CenterPointConfig, max_steps: int | None) -> None:
    """The checks that need no data: a positive max_steps, at least one epoch, a dataset section."""
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if config.train.epochs < 1:
        raise ValueError(f"training would take 0 steps: train.epochs = {config.train.epochs}, expected at least 1")
    if config.dataset is None:
        raise ValueError("the config has no dataset section; training needs dataset.root")


def training_device() -> torch.device:
    """Where :func:`train` runs: this process's GPU (``LOCAL_RANK`` under torchrun) when torch sees CUDA,
    else the CPU."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")


def build_training_run(config: CenterPointConfig, run_dir: str, resume: bool = False, max_steps: int | None = None,
                       frames: DetectionDataset | None = None) -> TrainingRun:
    """The model (seeded: the same initial weights on every rank), the data loader, AdamW and its
    one-cycle schedule over all epochs, and, when ``resume``, their state from ``run_dir``'s checkpoint
    after checking that it continues this run. ``frames``: the training frames; None: the config's
    training split. Writes nothing; joins the process group under torchrun."""
    rank, world = distributed_context()
    device = training_device()
    seed_everything(config.train.seed)  # the same initial weights on every rank
    model = CenterPoint(config.model).to(device)
    if frames is None:
        frames = split_frames(config, config.dataset.train_split)
    data = TargetDataset(frames, model, config.train.augmentation, config.train.seed,
                         _gt_sampler(config, frames, rank, world), config.train.min_points_in_gt)
    if config.train.cbgs:
        data = torch.utils.data.Subset(data, cbgs_indices(frames.label_sets(), config.model.head.class_names,
                                                          config.train.seed))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=config.train.seed)
    loader = DataLoader(data, batch_size=config.train.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.train.num_workers)
    if world > 1:
        # Loss normalisers over the global batch; batch statistics too unless per_process: then the same
        # training as one process.
        if config.train.batch_norm == "global":
            model = convert_to_cross_process_batch_norm(model)
        trainable = torch.nn.parallel.DistributedDataParallel(model)
    else:
        trainable = model
    total_steps = config.train.epochs * len(loader)
    if total_steps <= 0:
        raise ValueError(f"training would take 0 steps: train.epochs = {config.train.epochs}, and the training split "
                         f"{config.dataset.train_split!r} of {config.dataset.root} gives {len(loader)} batches per "
                         f"epoch ({len(data)} frames{', after CBGS' if config.train.cbgs else ''})")
    optimizer, scheduler = build_optimizer(model, config.optimizer, total_steps)
    run = TrainingRun(config, run_dir, device, rank, world, model, trainable,
                      global_share if world > 1 else at_least_one, data, sampler, loader, optimizer, scheduler,
                      torch.amp.GradScaler("cuda", enabled=device.type == "cuda"))
    if resume:
        _load_resume_state(run, max_steps)
    return run


def build_optimizer(model: torch.nn.Module, settings: OptimizerConfig, total_steps: int):
    """(AdamW, its one-cycle learning-rate and momentum schedule over ``total_steps`` steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=(0.95, 0.99),
                                  weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=max(total_steps, 1), pct_start=settings.pct_start,
        div_factor=settings.div_factor, base_momentum=0.85, max_momentum=0.95)
    return optimizer, scheduler


def _load_resume_state(run: TrainingRun, max_steps: int | None) -> None:
    """Model, optimizer, schedule and position from the run's checkpoint, checked to continue this run."""
    config, checkpoint_path, batches = run.config, run.checkpoint_path, len(run.loader)
    state = load_checkpoint(checkpoint_path, map_location=run.device)
    saved_batches = state.get("batches_per_epoch", batches)
    if saved_batches != batches:
        raise ValueError(f"--resume: {checkpoint_path} was trained with {saved_batches} batches per epoch "
                         f"(world size {state.get('world_size', '?')}), this run has {batches} (world size "
                         f"{run.world}): the position in the epoch would not be the same; resume with the same "
                         f"number of processes")
    if state["epoch"] >= config.train.epochs:
        raise ValueError(f"--resume: the run in {run.run_dir} has finished ({state['epoch']} of "
                         f"{config.train.epochs} epochs, {state['steps']} steps): nothing left to train")
    if max_steps is not None and max_steps <= state["steps"]:
        raise ValueError(f"--resume: the run in {run.run_dir} has done {state['steps']} steps already; max_steps "
                         f"{max_steps} counts all steps of the run, so it must exceed {state['steps']}")
    load_state_checked(run.model, state["model"], checkpoint_path)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch, run.skip, run.steps = state["epoch"], state["step_in_epoch"], state["steps"]
    run.resumed_rng = state["rng"]


def prepare_run_folder(run: TrainingRun, plan: str) -> None:
    """Once every rank has checked the folder, rank 0 moves an overwritten run aside and writes the
    config (a new run) or a resume record in the log; then the resumed RNG states are restored."""
    if run.world > 1:
        dist.barrier()  # every rank has checked the folder before rank 0 changes it
    if run.rank == 0:
        if plan == "overwrite":
            moved = move_aside(run.run_dir)
            print(f"{run.run_dir}: the previous run was moved to {moved}")
        os.makedirs(run.run_dir, exist_ok=True)
        if plan != "resume":
            write_atomically(os.path.join(run.run_dir, CONFIG),
                             yaml.safe_dump(to_dict(run.config), sort_keys=False).encode())
        else:  # later records of the interrupted run are superseded from here on
            append_log(run.log_path, {"event": "resume", "steps": run.steps, "epoch": run.start_epoch,
                                      "step_in_epoch": run.skip, "time": time.time()})
    if plan == "resume":
        restore_rng_states(run.resumed_rng)  # last: nothing above may draw from the restored generators


def train_one_epoch(run: TrainingRun, epoch: int, log: TrainingLog, max_steps: int | None = None,
                    progress: bool = False) -> EpochResult:
    """One pass over the loader (skipping the batches trained on before a resume), checkpointing
    every ``train.checkpoint_every`` steps and when ``max_steps`` steps in total are reached (then it
    stops). Updates ``run.steps`` and ``run.last_loss``; the end-of-epoch checkpoint is the caller's."""
    config, model, optimizer = run.config, run.model, run.optimizer
    run.sampler.set_epoch(epoch)
    (run.data.dataset if isinstance(run.data, torch.utils.data.Subset) else run.data).epoch = epoch
    model.train()
    skip = run.skip if epoch == run.start_epoch else 0
    batches = run.loader if skip == 0 else _loader_after(run, skip)
    if progress and run.rank == 0:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch", initial=skip,
                       total=len(run.loader))
    done = 0
    fetched = time.perf_counter()
    for step, (clouds, targets) in enumerate(batches, start=skip):
        started = time.perf_counter()
        targets = [{k: v.to(run.device) for k, v in group.items()} for group in targets]
        with torch.autocast(run.device.type, enabled=run.use_amp):
            predictions = run.trainable(clouds)
            losses = model.loss(predictions, targets, run.normaliser)
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(losses["loss"]).backward()
        run.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
        run.scaler.step(optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.steps += 1
        done += 1
        run.last_loss = float(losses["loss"].detach())
        log.step(epoch, run.steps, run.scheduler.get_last_lr()[0], losses, data_time=started - fetched,
                 step_time=time.perf_counter() - started, due=run.steps % config.train.log_every == 0)
        if config.train.checkpoint_every and run.steps % config.train.checkpoint_every == 0:
            save_training_checkpoint(run, epoch, step + 1)
        if max_steps is not None and run.steps >= max_steps:
            save_training_checkpoint(run, epoch, step + 1)
            return EpochResult(done, run.last_loss if done else float("nan"), stopped=True)
        fetched = time.perf_counter()
    return EpochResult(done, run.last_loss if done else float("nan"), stopped=False)


def _loader_after(run: TrainingRun, skip: int) -> DataLoader:
    """The batches of this epoch after the first ``skip``, trained on before an interruption: the
    sampler's order is seeded per epoch, so its indices past ``skip`` batches give the same batches,
    without reading and augmenting the skipped frames again."""
    batch_size = run.loader.batch_size
    return DataLoader(run.data, batch_size=batch_size, sampler=list(run.sampler)[skip * batch_size:],
                      collate_fn=collate, num_workers=run.loader.num_workers)


def save_training_checkpoint(run: TrainingRun, epoch: int, step_in_epoch: int) -> None:
    """On rank 0, the checkpoint a resume continues from: weights, optimizer, schedule, the position
    (``epoch`` and ``step_in_epoch`` batches into it, steps in total), the RNG states, and the config
    as a plain dict (so that a checkpoint copied out of its run folder still says what its weights mean)."""
    if run.rank == 0:
        save_checkpoint(run.checkpoint_path, {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                                              "scheduler": run.scheduler.state_dict(), "epoch": epoch,
                                              "step_in_epoch": step_in_epoch, "steps": run.steps,
                                              "batches_per_epoch": len(run.loader), "world_size": run.world,
                                              "rng": rng_states(), "config": to_dict(run.config)})


class TrainingLog:
    """``log.jsonl`` (one JSON object per record) and TensorBoard scalars (``writer``, when given) of
    rank 0 (``enabled``). A step record is written for the first step and every due one; its
    ``data_time`` and ``step_time`` are seconds per step since the previous record."""

    def __init__(self, path: str, writer=None, enabled: bool = True):
        self.path, self.writer, self.enabled = path, writer, enabled
        self._timing = {"data_time": 0.0, "step_time": 0.0, "steps": 0}

    def step(self, epoch: int, step: int, lr: float, losses: dict[str, torch.Tensor], data_time: float,
             step_time: float, due: bool) -> None:
        """Account one optimizer step (``data_time``: waiting for the loader; ``step_time``: the rest)."""
        self._timing["data_time"] += data_time
        self._timing["step_time"] += step_time
        self._timing["steps"] += 1
        if not self.enabled or not (due or step == 1):
            return
        timing = self._timing
        record = {"epoch": epoch, "step": step, "lr": lr, "time": time.time(),
                  **{k: float(v.detach()) for k, v in losses.items()},
                  "data_time": timing["data_time"] / timing["steps"],
                  "step_time": timing["step_time"] / timing["steps"]}
        self._timing = {"data_time": 0.0, "step_time": 0.0, "steps": 0}
        append_log(self.path, record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("epoch", "step", "time"):
                    self.writer.add_scalar(f"train/{key}", value, step)

    def event(self, record: dict) -> None:
        if self.enabled:
            append_log(self.path, record)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def append_log(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


@torch.no_grad()
def recompute_batch_norm_statistics(model: torch.nn.Module, batches, limit: int) -> int:
    """PreciseBN: every BatchNorm's running mean and variance become the average over up to ``limit``
    batches (model inputs) of their batch statistics, with the weights as they are now. Returns the
    number of batches used. The model's mode and the layers' momenta are restored."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta, was_training = [m.momentum for m in norms], model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
    model.train()
    used = 0
    for inputs in batches:
        if used == limit:
            break
        model(inputs)
        used += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return used


def _gt_sampler(config: CenterPointConfig, frames: DetectionDataset, rank: int, world: int) -> GTSampler | None:
    """The GT sampler of the config, (re)building its database from the training frames when missing or
    built from other data."""
    settings = config.train.gt_sampling
    if settings is None:
        return None
    if rank == 0:
        ensure_gt_database(frames, settings.database, settings.min_points)
    if world > 1:
        dist.barrier()
    return GTSampler(settings.database, settings.sample_groups, config.model.head.class_names,
                     expected_key=gt_database_key(frames, settings.min_points))


def _finish(run: TrainingRun, log: TrainingLog) -> dict:
    """Log the end of the run; under DDP, check that every rank holds the same weights."""
    checksum = torch.stack([p.detach().double().sum() for p in run.model.parameters()]).sum().reshape(1).cpu()
    checksums = [checksum]
    if run.world > 1:
        checksums = [torch.zeros_like(checksum) for _ in range(run.world)]
        dist.all_gather(checksums, checksum)
        dist.barrier()  # no rank leaves the group while another still talks to it
    end = {"event": "end", "steps": run.steps, "world_size": run.world,
           "weight_checksums": [float(c) for c in checksums],
           "ranks_in_sync": all(torch.equal(c, checksums[0]) for c in checksums)}
    log.event(end)
    log.close()
    return {"steps": run.steps, "last_loss": run.last_loss, "checkpoint": run.checkpoint_path, "model": run.model,
            "ranks_in_sync": end["ranks_in_sync"]}


def _tensorboard(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(run_dir, "tensorboard"))
