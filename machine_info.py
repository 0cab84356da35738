"""The machine a measurement ran on, as the records and benchmark tables name it."""
from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows, with the vector
    instructions torch runs on it, e.g. "AMD EPYC (AVX2)": VMs of one model name have come with AVX-512 and
    with AVX2 only, at different speeds."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or "unknown CPU"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"
