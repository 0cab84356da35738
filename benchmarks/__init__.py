"""Benchmarks of the voxelizer, the sparse-conv backends and the whole detector, run by tools/benchmark.py.

They sit above the library packages (they read real scans through datasets and build detectors), so no
library package imports them; numbers go to docs/benchmarks.md with the machine they came from.
"""
