"""Benchmark helpers (timing, peak memory, the machine) and the voxelizer benchmark.

Timings interleave the compared sides (A B A B ...) and report medians, because 2-thread
timings on small VMs stall now and then. Peak memory is measured in a fresh process per side
(the high-water mark of resident memory, reset just before the measured call), so neither side
profits from memory the other freed.
"""
from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from datasets.point_files import read_points
from machine_info import cpu_name
from voxelize.allocator import malloc_setting
from voxelize.presets import VOXEL_PRESETS
from voxelize.voxelizer import Voxelizer


def machine_description() -> str:
    """One line naming the CPU (and its vector instructions, :func:`machine_info.cpu_name`), cores, Python,
    torch and spconv versions, the malloc settings and the GPU torch sees (if any)."""
    try:
        import spconv
        spconv_version = spconv.__version__
    except ImportError:
        spconv_version = "absent"
    malloc = os.environ.get("MALLOC_MMAP_THRESHOLD_", "default")
    return (f"{cpu_name()}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, spconv {spconv_version}, MALLOC_MMAP_THRESHOLD_={malloc}, "
            f"freed memory: {malloc_setting()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
            + (f", GPU {torch.cuda.get_device_name()} (torch built for CUDA {torch.version.cuda})"
               if torch.cuda.is_available() else ""))


def interleaved_medians(functions: dict, repeats: int = 7, warmup: int = 2, device="cpu") -> dict[str, float]:
    """Median wall time in seconds of each zero-argument function, called in turn (A B A B ...). On a
    CUDA ``device`` each run is timed from an idle device until its queued kernels have finished, since
    kernels run after the call that launches them returns."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    wait = device_waiter(device)
    for _ in range(warmup):
        for function in functions.values():
            function()
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wait()
            start = time.perf_counter()
            function()
            wait()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def thread_counts(counts):
    """Yield each of ``counts`` with torch's intra-op thread count set to it; the caller's count is back
    afterwards (a benchmark otherwise leaves its last count to the rest of the process)."""
    before = torch.get_num_threads()
    try:
        for count in counts:
            torch.set_num_threads(count)
            yield count
    finally:
        torch.set_num_threads(before)


def device_waiter(device):
    """A function that returns once ``device`` has finished its queued work (nothing to wait for on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def _peak_of_call(make, call) -> float:
    """MiB of resident memory added at the peak of ``call(make())`` over the level before ``make``."""
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (Linux >= 4.0)
        f.write("5")
    before = _resident_kib("VmRSS:")
    call(make())
    return (_resident_kib("VmHWM:") - before) / 1024


def _peak_in_child(side: str, path: str, geometry: str, queue) -> None:
    torch.set_num_threads(1)
    points = torch.from_numpy(read_points(path))
    kwargs = VOXEL_PRESETS[geometry]
    if side == "sparsevox":
        queue.put(_peak_of_call(lambda: Voxelizer(**kwargs), lambda v: v(points)))
    else:
        from spconv.pytorch.utils import PointToVoxel
        queue.put(_peak_of_call(
            lambda: PointToVoxel(kwargs["voxel_size"], kwargs["point_cloud_range"], points.shape[1],
                                 kwargs["max_voxels"], kwargs["max_points_per_voxel"]),
            lambda generator: generator(points)))


def peak_memory_mib(side: str, path: str, geometry: str) -> float:
    """Peak extra resident memory (MiB) of building and running one voxelizer, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_peak_in_child, args=(side, path, geometry, queue))
    child.start()
    result = queue.get(timeout=300)
    child.join()
    return result


@dataclass
class VoxelizeResult:
    cloud: str
    points: int
    voxels: int
    threads: int
    ours_ms: float
    spconv_ms: float
    ours_mib: float
    spconv_mib: float

    @property
    def speedup(self) -> float:
        return self.spconv_ms / self.ours_ms


def benchmark_voxelize(clouds: list[tuple[str, str]], threads=(1, 2), repeats: int = 7) -> list[VoxelizeResult]:
    """Our hard-mode Voxelizer vs spconv ``PointToVoxel`` on each (path, geometry name).

    Both produce the same voxels (checked here before timing); times exclude building the
    generator (spconv allocates its dense table once, up front), memory includes it.
    """
    from spconv.pytorch.utils import PointToVoxel

    results = []
    for path, geometry in clouds:
        kwargs = VOXEL_PRESETS[geometry]
        points = torch.from_numpy(read_points(path))
        ours = Voxelizer(**kwargs)
        theirs = PointToVoxel(kwargs["voxel_size"], kwargs["point_cloud_range"], points.shape[1],
                              kwargs["max_voxels"], kwargs["max_points_per_voxel"])
        voxels = ours(points)
        _, their_coords, their_counts = theirs(points)
        if not (torch.equal(voxels.coords, their_coords) and torch.equal(voxels.num_points, their_counts)):
            raise RuntimeError(f"{path}: our voxels differ from spconv's; refusing to time them")
        memory = {side: peak_memory_mib(side, path, geometry) for side in ("sparsevox", "spconv")}
        for count in thread_counts(threads):
            medians = interleaved_medians({"ours": lambda: ours(points), "spconv": lambda: theirs(points)},
                                          repeats=repeats)
            results.append(VoxelizeResult(os.path.basename(path), points.shape[0], voxels.coords.shape[0],
                                          count, medians["ours"] * 1e3, medians["spconv"] * 1e3,
                                          memory["sparsevox"], memory["spconv"]))
    return results


def voxelize_table(results: list[VoxelizeResult]) -> str:
    """A markdown table of voxelizer benchmark results."""
    lines = ["| cloud | points | voxels | threads | sparsevox ms | spconv ms | sparsevox Mpts/s | "
             "spconv Mpts/s | speed ratio (ours/spconv) | sparsevox peak MiB | spconv peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.cloud} | {r.points} | {r.voxels} | {r.threads} | {r.ours_ms:.2f} | {r.spconv_ms:.2f} | "
                     f"{r.points / r.ours_ms / 1e3:.1f} | {r.points / r.spconv_ms / 1e3:.1f} | "
                     f"{r.speedup:.2f}x | {r.ours_mib:.1f} | {r.spconv_mib:.1f} |")
    return "\n".join(lines)


__all__ = ["benchmark_voxelize", "device_waiter", "interleaved_medians", "machine_description",
           "peak_memory_mib", "thread_counts", "voxelize_table"]
