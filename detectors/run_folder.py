"""Run folders that are never clobbered.

A training run folder holds ``config.yaml``, ``log.jsonl``, ``checkpoint.pt`` and ``tensorboard/``.
Before a run writes anything, :func:`check_run_folder` decides what it may do there:

- a folder without run files (or no folder): a new run;
- a folder with run files: refused, unless ``resume`` (continue the checkpoint's run, with the same
  config: the differences from the saved ``config.yaml``, or from the config inside the checkpoint,
  are listed field by field) or ``overwrite``
  (start over; :func:`move_aside` renames the old folder to ``RUN.replaced-YYYYmmdd-HHMMSS``,
  nothing is deleted);
- ``resume`` without a checkpoint: refused.

:func:`hold_run_folder` keeps one training per folder: a second one (another terminal, a job restarted
while the first still runs) is refused instead of writing its checkpoints between the first one's.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager

import yaml

from detectors.checkpoints import load_checkpoint

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.yaml"
LOG = "log.jsonl"
RUN_FILES = (CHECKPOINT, CONFIG, LOG, "tensorboard")
# Settings that change how a run is executed or logged, or how its weights predict, not what it trains: a
# resume may change them.
RESUMABLE_CHANGES = ("train.num_workers", "train.log_every", "train.checkpoint_every", "model.test_augmentation")


def check_run_folder(run_dir: str, config: dict, resume: bool, overwrite: bool) -> str:
    """'new', 'resume' or 'overwrite': what a run of ``config`` (a plain dict, as written to
    config.yaml) may do in ``run_dir``. Raises ValueError (nothing written) when the folder holds
    another run and neither ``resume`` nor ``overwrite`` is given, when ``resume`` finds no
    checkpoint, or when ``resume`` is asked with a config that differs from the run's."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: continue the run, or start it over")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"run folder {run_dir} is a file, not a folder")
    present = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
    checkpoint = os.path.join(run_dir, CHECKPOINT)
    if resume:
        if not os.path.isfile(checkpoint):
            raise ValueError(f"--resume: {run_dir} holds no {CHECKPOINT} to continue from"
                             + (f" (it holds {', '.join(present)}; start over with --overwrite)" if present else ""))
        differences = run_config_differences(run_dir, config)
        if differences:
            raise ValueError(f"--resume: the config differs from the run's in {run_dir} ({differences}); resume "
                             f"with the run's config, or start a new run: another --out, or --overwrite")
        return "resume"
    if not present:
        return "new"
    if overwrite:
        return "overwrite"
    what = "a checkpoint" if CHECKPOINT in present else f"the files of a run ({', '.join(present)})"
    raise ValueError(f"run folder {run_dir} already holds {what}: pass --resume to continue it"
                     f"{'' if CHECKPOINT in present else ' (not possible: no checkpoint)'}, --overwrite to start "
                     f"over (the old folder is renamed, not deleted), or choose another --out")


@contextmanager
def hold_run_folder(run_dir: str):
    """Hold ``run_dir`` for one training until the block ends; raises ValueError naming the holder when another
    process holds it. The hold is an advisory lock on ``.NAME.lock`` beside the folder (not in it: a folder
    started over is moved aside, and the new one must stay held), so it ends with its process, even a killed
    one; the file itself stays. Without ``fcntl`` (Windows) nothing is held."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = os.path.realpath(run_dir)  # one folder, one lock, whatever the path (a link, ./, ..)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with open(os.path.join(os.path.dirname(folder), f".{os.path.basename(folder)}.lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise ValueError(f"run folder {run_dir} is being trained by {holder}: wait for that training to end "
                             f"or stop it, or choose another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} on {socket.gethostname()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        lock.flush()
        yield


def run_config_differences(run_dir: str, config: dict) -> str:
    """'FILE: key: run X, requested Y; ...' (the first 12) for the settings in which ``config`` differs from
    the run's config.yaml, else from the config saved in its checkpoint (what the weights were trained
    with: a checkpoint copied in from another run disagrees there); '' when both agree or are absent."""
    requested = _as_written(config)
    saved_path, checkpoint = os.path.join(run_dir, CONFIG), os.path.join(run_dir, CHECKPOINT)
    if os.path.isfile(saved_path):
        with open(saved_path) as f:
            differences = config_differences(yaml.safe_load(f), requested)
        if differences:
            return _summary(CONFIG, differences)
    if os.path.isfile(checkpoint):
        saved = load_checkpoint(checkpoint).get("config")
        if saved is not None:
            return _summary(CHECKPOINT, config_differences(_as_written(saved), requested))
    return ""


def _summary(name: str, differences: list[str]) -> str:
    if not differences:
        return ""
    return f"{name}: " + "; ".join(differences[:12]) + ("; ..." if len(differences) > 12 else "")


def config_differences(saved: dict, requested: dict, ignored=RESUMABLE_CHANGES) -> list[str]:
    """'key: run X, requested Y' for every dotted key whose value differs, model keys first, leaving
    out ``ignored``."""
    old, new = _flatten(saved or {}), _flatten(requested)
    keys = [key for key in sorted(set(old) | set(new), key=lambda k: (not k.startswith("model."), k))
            if key not in ignored and old.get(key, "<absent>") != new.get(key, "<absent>")]
    return [f"{key}: run {old.get(key, '<absent>')!r}, requested {new.get(key, '<absent>')!r}" for key in keys]


def move_aside(run_dir: str) -> str:
    """Rename ``run_dir`` to ``run_dir.replaced-<local time>`` (a counter added when taken); returns the new path."""
    stem = f"{os.path.normpath(run_dir)}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
    target, counter = stem, 1
    while os.path.exists(target):
        counter += 1
        target = f"{stem}-{counter}"
    os.rename(run_dir, target)
    return target


def _as_written(config: dict) -> dict:
    """``config`` as config.yaml will read back (tuples as lists, and so on)."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}
