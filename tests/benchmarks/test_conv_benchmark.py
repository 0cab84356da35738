"""The conv benchmark runs the installed backends where the scan lives; a backend that is not installed
has empty columns (not a made-up number), and a GPU run counts the same work as the CPU run."""
import math

import pytest
import torch
from conftest import KITTI_SCANS

import benchmarks.sparse_conv as conv_benchmark
from benchmarks.voxelizer import device_waiter

CASES = ["SubM 16→16", "VoxelBackBone8x (eval)"]


def _torch_only(real_file, monkeypatch, device):
    monkeypatch.setattr(conv_benchmark, "available_backends", lambda: ["torch"])
    scan = str(real_file(KITTI_SCANS[0]))
    before = torch.get_num_threads()
    results = conv_benchmark.benchmark_conv([(scan, "kitti")], threads=(1,), repeats=1, cases=CASES, device=device)
    assert torch.get_num_threads() == before  # the process's thread count is back (a later test's float noise)
    return results


def test_without_spconv_its_columns_are_empty(real_file, monkeypatch):
    results = _torch_only(real_file, monkeypatch, "cpu")
    assert [r.case for r in results] == CASES
    for r in results:
        assert r.device == "cpu" and r.torch_ms > 0 and r.torch_map_ms > 0
        assert math.isnan(r.spconv_ms) and math.isnan(r.spconv_map_ms) and math.isnan(r.ratio)
    subm, backbone = results
    assert subm.sites_out == subm.sites_in == 40000  # the scan's voxels; a submanifold conv keeps its sites
    assert subm.gmacs >= subm.sites_in * 16 * 16 / 1e9  # at least each site's own centre tap
    assert backbone.sites_out < backbone.sites_in
    rows = conv_benchmark.conv_table(results).splitlines()[2:]
    assert all(row.split(" | ").count("–") >= 3 and row.startswith("| cpu |") for row in rows)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_same_work_is_timed(real_file, monkeypatch):
    on_cpu = _torch_only(real_file, monkeypatch, "cpu")
    on_gpu = _torch_only(real_file, monkeypatch, "cuda")
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert gpu.device == "cuda" and gpu.torch_ms > 0
        assert (gpu.sites_in, gpu.sites_out, gpu.gmacs) == (cpu.sites_in, cpu.sites_out, cpu.gmacs)


def test_waiting_for_the_cpu_is_free():
    assert device_waiter("cpu")() is None


def test_each_timed_run_waits_for_the_device_before_and_after(monkeypatch):
    import benchmarks.voxelizer as helpers

    events = []
    monkeypatch.setattr(helpers, "device_waiter", lambda device: lambda: events.append(("wait", str(device))))
    helpers.interleaved_medians({"a": lambda: events.append("a"), "b": lambda: events.append("b")},
                                repeats=2, warmup=1, device="cuda")
    timed = [("wait", "cuda"), "a", ("wait", "cuda"), ("wait", "cuda"), "b", ("wait", "cuda")]
    assert events == ["a", "b", *timed, *timed]
