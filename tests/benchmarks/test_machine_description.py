"""The machine line of every benchmark table names the vector instructions torch runs on: the same CPU
model name ("AMD EPYC") has come with AVX-512 (../shared/perf-notes.md) and with AVX2 only (2026-12-01),
and the demo trained 1.3x slower on the second than on earlier VMs of that name."""
import torch

from benchmarks.voxelizer import machine_description
from detectors.sparsity_study import machine


def test_the_machine_line_names_the_cpu_capability():
    line = machine_description()
    assert f"({torch.backends.cpu.get_cpu_capability()})" in line.split(",")[0]


def test_the_study_records_name_the_cpu_capability():
    assert machine()["cpu"].endswith(f"({torch.backends.cpu.get_cpu_capability()})")
