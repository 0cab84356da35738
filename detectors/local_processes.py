"""Data-parallel training in several processes of this machine, started by :func:`detectors.training.train`
itself (``train.processes``), as ``torchrun --nproc_per_node=N`` would start them.

Why on a CPU: the sparse convs and the head's small 2D convs scale poorly over threads. Over steps 11-360 of
the demo's training, a step of two frames took 1.00 s on two threads and 0.70-0.76 s as two processes of one
thread and one frame each (docs/benchmarks.md, "Two processes").
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback

import torch
import torch.multiprocessing as multiprocessing
from torch.multiprocessing.spawn import ProcessException

from voxelize.allocator import keep_freed_memory, malloc_setting


class TrainingProcessTraceback(Exception):
    """The traceback of an error raised in a training process, as the cause of that error re-raised here."""


def started_by_a_launcher() -> bool:
    """Whether this process is one of a group already (torchrun, or :func:`train_in_processes`)."""
    return "WORLD_SIZE" in os.environ


def threads_per_process(processes: int) -> int:
    """This process's intra-op threads shared out over ``processes``, at least one each."""
    return max(1, torch.get_num_threads() // processes)


def check_process_count(processes: int) -> None:
    """One GPU per process where torch sees CUDA (as under torchrun)."""
    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise ValueError(f"train.processes is {processes}, but torch sees {torch.cuda.device_count()} GPU(s): "
                         f"each training process takes one; set train.processes to at most that")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_when_orphaned(parent: int, rank: int, processes: int) -> None:
    """End this process when ``parent``, the process that started the group, is gone (killed, not stopped by
    Ctrl-C, which reaches the whole group): an orphaned group would go on training and writing checkpoints
    into the run folder, beside any run started there again."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        print(f"training process {rank} of {processes}: the process that started it ({parent}) is gone; "
              f"stopping", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


def _worker(rank: int, processes: int, parent: int, port: int, threads: int, keep_memory: bool, arguments: tuple,
            results) -> None:
    from detectors.training import train

    _stop_when_orphaned(parent, rank, processes)
    os.environ.update(WORLD_SIZE=str(processes), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    if keep_memory:
        keep_freed_memory()
    config, run_dir, resume, overwrite, max_steps, progress = arguments
    try:
        result = train(config, run_dir, resume=resume, max_steps=max_steps, progress=progress, overwrite=overwrite)
    except Exception as error:
        trace = traceback.format_exc()
        try:  # the error itself, so that the caller sees a bad input as the one-line error it is
            results.put((rank, "error", (error, trace)))
        except Exception:  # an error that does not pickle
            results.put((rank, "error", (RuntimeError(f"{type(error).__name__}: {error}"), trace)))
        raise
    if rank == 0:
        results.put((rank, "result", {key: value for key, value in result.items() if key != "model"}))


def train_in_processes(config, run_dir: str, resume: bool, overwrite: bool, max_steps: int | None,
                       progress: bool) -> dict:
    """Run :func:`detectors.training.train` in ``config.train.processes`` new processes (DDP, gloo on CPU),
    each with an equal share of this process's threads, as one torchrun group; returns rank 0's result
    without the model. An error in a process (the lowest rank's) is raised here as it was there, with its
    traceback there as the cause."""
    processes = config.train.processes
    check_process_count(processes)
    results = multiprocessing.get_context("spawn").SimpleQueue()
    arguments = (config, run_dir, resume, overwrite, max_steps, progress)
    try:
        multiprocessing.start_processes(
            _worker, args=(processes, os.getpid(), _free_port(), threads_per_process(processes),
                           malloc_setting() != "default", arguments, results),
            nprocs=processes, join=True, start_method="spawn")
    except ProcessException as failure:
        errors = sorted(((rank, value) for rank, kind, value in _drain(results) if kind == "error"),
                        key=lambda report: report[0])
        if not errors:  # killed, or exited without a Python error
            raise RuntimeError(f"training in {processes} processes ({run_dir}) failed: {failure}") from None
        rank, (error, trace) = errors[0]
        raise error from TrainingProcessTraceback(f"training process {rank} of {processes}:\n{trace}")
    return next(value for rank, kind, value in _drain(results) if kind == "result")


def _drain(queue) -> list:
    reports = []
    while not queue.empty():
        reports.append(queue.get())
    return reports
