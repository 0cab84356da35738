"""Training and evaluating CenterPoint: one process or ``torchrun`` (DDP, gloo on CPU, nccl on CUDA).

A run folder holds the resolved config, ``log.jsonl`` (one JSON object per logged step), TensorBoard
scalars when tensorboard is installed, and checkpoints written atomically (temp file, fsync,
rename) and read without running code (``detectors.checkpoints``). ``resume`` restores model,
optimizer, scheduler, epoch, position in the epoch and the RNG states, so an interrupted run
continues as if it had not stopped (bitwise on CPU). A folder that holds a run is never written
over by accident (``detectors.run_folder``), and a run or an evaluation of nothing (0 steps, 0
frames) is an error, not a result.
"""
from __future__ import annotations

import json
import os
import random
import time

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
from datasets.dataset_types import build_dataset, build_evaluator
from datasets.gt_sampling import GTSampler, cbgs_indices, ensure_gt_database, gt_database_key
from detectors.center_head import at_least_one
from detectors.center_targets import build_targets
from detectors.centerpoint import CenterPoint, CenterPointConfig
from detectors.checkpoints import (
    load_checkpoint,
    load_model_weights,
    load_state_checked,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from detectors.config import to_dict
from detectors.run_folder import CHECKPOINT, CONFIG, LOG, check_run_folder, move_aside


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


def train(config: CenterPointConfig, run_dir: str, resume: bool = False, max_steps: int | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Train; returns {'steps': total steps done, 'last_loss': float, 'checkpoint': path, 'model': the model}.

    max_steps stops early (after that many optimizer steps in total), for tests and smoke runs.
    A ``run_dir`` that holds a run is refused unless ``resume`` (continue it, with the same config)
    or ``overwrite`` (start over; the old folder is renamed to ``RUN_DIR.replaced-<time>``), see
    ``detectors.run_folder``. Every check (run folder, config, a training of at least one step, the
    checkpoint) is done before anything is written.
    """
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if config.train.epochs < 1:
        raise ValueError(f"training would take 0 steps: train.epochs = {config.train.epochs}, expected at least 1")
    if config.dataset is None:
        raise ValueError("the config has no dataset section; training needs dataset.root")
    plan = check_run_folder(run_dir, to_dict(config), resume, overwrite)
    rank, world = distributed_context()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    seed_everything(config.train.seed)  # the same initial weights on every rank
    model = CenterPoint(config.model).to(device)
    frames = _dataset(config, config.dataset.train_split)
    data = TargetDataset(frames, model, config.train.augmentation, config.train.seed,
                         _gt_sampler(config, frames, rank, world), config.train.min_points_in_gt)
    if config.train.cbgs:
        data = torch.utils.data.Subset(data, cbgs_indices(frames.label_sets(), config.model.head.class_names,
                                                          config.train.seed))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=config.train.seed)
    loader = DataLoader(data, batch_size=config.train.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=config.train.num_workers)
    if world > 1:
        # Batch statistics and loss normalisers over the global batch: the same training as one process.
        model = convert_to_cross_process_batch_norm(model)
        trainable = torch.nn.parallel.DistributedDataParallel(model)
    else:
        trainable = model
    normaliser = global_share if world > 1 else at_least_one
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr, betas=(0.95, 0.99),
                                  weight_decay=config.optimizer.weight_decay)
    total_steps = config.train.epochs * len(loader)
    if total_steps <= 0:
        raise ValueError(f"training would take 0 steps: train.epochs = {config.train.epochs}, and the training split "
                         f"{config.dataset.train_split!r} of {config.dataset.root} gives {len(loader)} batches per "
                         f"epoch ({len(data)} frames{', after CBGS' if config.train.cbgs else ''})")
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.optimizer.lr, total_steps=max(total_steps, 1), pct_start=config.optimizer.pct_start,
        div_factor=config.optimizer.div_factor, base_momentum=0.85, max_momentum=0.95)
    checkpoint_path = os.path.join(run_dir, CHECKPOINT)
    log_path = os.path.join(run_dir, LOG)
    start_epoch, skip, step_total = 0, 0, 0
    if plan == "resume":
        state = load_checkpoint(checkpoint_path, map_location=device)
        saved_batches = state.get("batches_per_epoch", len(loader))
        if saved_batches != len(loader):
            raise ValueError(f"--resume: {checkpoint_path} was trained with {saved_batches} batches per epoch "
                             f"(world size {state.get('world_size', '?')}), this run has {len(loader)} (world size "
                             f"{world}): the position in the epoch would not be the same; resume with the same "
                             f"number of processes")
        if state["epoch"] >= config.train.epochs:
            raise ValueError(f"--resume: the run in {run_dir} has finished ({state['epoch']} of "
                             f"{config.train.epochs} epochs, {state['steps']} steps): nothing left to train")
        if max_steps is not None and max_steps <= state["steps"]:
            raise ValueError(f"--resume: the run in {run_dir} has done {state['steps']} steps already; max_steps "
                             f"{max_steps} counts all steps of the run, so it must exceed {state['steps']}")
        load_state_checked(model, state["model"], checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, skip, step_total = state["epoch"], state["step_in_epoch"], state["steps"]
        rng_to_restore = state["rng"]
    if world > 1:
        dist.barrier()  # every rank has checked the folder before rank 0 changes it
    if rank == 0:
        if plan == "overwrite":
            moved = move_aside(run_dir)
            print(f"{run_dir}: the previous run was moved to {moved}")
        os.makedirs(run_dir, exist_ok=True)
        if plan != "resume":
            write_atomically(os.path.join(run_dir, CONFIG), yaml.safe_dump(to_dict(config), sort_keys=False).encode())
        else:
            with open(log_path, "a") as f:  # later records of the interrupted run are superseded from here on
                f.write(json.dumps({"event": "resume", "steps": step_total, "epoch": start_epoch,
                                    "step_in_epoch": skip, "time": time.time()}) + "\n")
    if plan == "resume":
        restore_rng_states(rng_to_restore)  # last: nothing above may draw from the restored generators
    writer = _tensorboard(run_dir) if rank == 0 else None
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    last_loss = float("nan")

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        if rank == 0:
            save_checkpoint(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict(), "epoch": epoch,
                                              "step_in_epoch": step_in_epoch, "steps": step_total,
                                              "batches_per_epoch": len(loader), "world_size": world,
                                              "rng": rng_states()})

    timing = {"data_time": 0.0, "step_time": 0.0, "steps": 0}
    for epoch in range(start_epoch, config.train.epochs):
        sampler.set_epoch(epoch)
        (data.dataset if isinstance(data, torch.utils.data.Subset) else data).epoch = epoch
        model.train()
        batches = loader
        if progress and rank == 0:
            from tqdm import tqdm
            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch")
        fetched = time.perf_counter()
        for step, (clouds, targets) in enumerate(batches):
            started = time.perf_counter()
            if epoch == start_epoch and step < skip:
                fetched = time.perf_counter()
                continue  # trained on before the interruption (the order is the same: seeded per epoch)
            targets = [{k: v.to(device) for k, v in group.items()} for group in targets]
            with torch.autocast(device.type, enabled=use_amp):
                predictions = trainable(clouds)
                losses = model.loss(predictions, targets, normaliser)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step_total += 1
            last_loss = float(losses["loss"].detach())
            timing["data_time"] += started - fetched   # waiting for the loader
            timing["step_time"] += time.perf_counter() - started
            timing["steps"] += 1
            if rank == 0 and (step_total % config.train.log_every == 0 or step_total == 1):
                # Seconds per step since the last record: waiting for data, and the rest of the step.
                record = {"epoch": epoch, "step": step_total, "lr": scheduler.get_last_lr()[0], "time": time.time(),
                          **{k: float(v.detach()) for k, v in losses.items()},
                          "data_time": timing["data_time"] / timing["steps"],
                          "step_time": timing["step_time"] / timing["steps"]}
                timing = {"data_time": 0.0, "step_time": 0.0, "steps": 0}
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                if writer is not None:
                    for key, value in record.items():
                        if key not in ("epoch", "step", "time"):
                            writer.add_scalar(f"train/{key}", value, step_total)
            if config.train.checkpoint_every and step_total % config.train.checkpoint_every == 0:
                checkpoint(epoch, step + 1)
            if max_steps is not None and step_total >= max_steps:
                checkpoint(epoch, step + 1)
                return _finish(model, world, rank, log_path, writer, step_total, last_loss, checkpoint_path)
            fetched = time.perf_counter()
        checkpoint(epoch + 1, 0)
    if config.train.precise_bn_batches > 0:
        recompute_batch_norm_statistics(model, (clouds for clouds, _ in loader), config.train.precise_bn_batches)
        checkpoint(config.train.epochs, 0)
    return _finish(model, world, rank, log_path, writer, step_total, last_loss, checkpoint_path)


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


def _dataset(config: CenterPointConfig, split: str) -> DetectionDataset:
    """The frames of a split of the config's dataset, checked against the model's point features."""
    frames = build_dataset(config.dataset, split, config.model.head.class_names)
    if frames.num_point_features != config.model.num_point_features:
        raise ValueError(f"dataset.type {config.dataset.type!r} gives {frames.num_point_features} point features "
                         f"{list(frames.point_features)}; model.num_point_features is "
                         f"{config.model.num_point_features}")
    return frames


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


def _finish(model, world, rank, log_path, writer, steps, last_loss, checkpoint_path) -> dict:
    """Log the end of the run; under DDP, check that every rank holds the same weights."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1).cpu()
    checksums = [checksum]
    if world > 1:
        checksums = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(checksums, checksum)
    end = {"event": "end", "steps": steps, "world_size": world,
           "weight_checksums": [float(c) for c in checksums],
           "ranks_in_sync": all(torch.equal(c, checksums[0]) for c in checksums)}
    if rank == 0:
        with open(log_path, "a") as f:
            f.write(json.dumps(end) + "\n")
    if writer is not None:
        writer.close()
    return {"steps": steps, "last_loss": last_loss, "checkpoint": checkpoint_path, "model": model,
            "ranks_in_sync": end["ranks_in_sync"]}


def _tensorboard(run_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(run_dir, "tensorboard"))


def evaluate(config: CenterPointConfig, checkpoint_path: str, out_dir: str, split: str | None = None) -> dict:
    """Detect on every frame of a split and score it with the dataset type's evaluator (nuScenes: the
    results JSON and the official metrics; KITTI: BEV / 3D AP; custom: BEV / 3D / distance AP);
    returns its metrics, which it writes under ``out_dir``."""
    if config.dataset is None:
        raise ValueError("the config has no dataset section; evaluation needs dataset.root")
    split = split or config.dataset.val_split
    model = CenterPoint(config.model)
    load_model_weights(model, checkpoint_path)
    model.eval()
    frames = _dataset(config, split)
    if len(frames) == 0:
        raise ValueError(f"the split {split!r} of {config.dataset.root} has no frames: nothing to evaluate")
    evaluator = build_evaluator(config.dataset, split, config.model.head.class_names)
    for index in range(len(frames)):
        frame = frames[index]
        detections = model.predict([frame["points"]])[0]
        evaluator.add_frame(str(index), frame)
        evaluator.process(str(index), detections["boxes"], detections["scores"], detections["labels"])
    os.makedirs(out_dir, exist_ok=True)
    return evaluator.evaluate(out_dir)
