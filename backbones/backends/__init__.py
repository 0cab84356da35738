"""The table of sparse-conv backends: name → an object that runs a conv module (see ``base``).

Adding a backend (e.g. TorchSparse) is one module with a :class:`SparseConvBackend` subclass and one entry
here; command-line choices, benchmarks and the backend tests iterate over this table.
"""
from __future__ import annotations

from backbones.backends.base import SparseConvBackend
from backbones.backends.spconv_backend import SpconvBackend
from backbones.backends.torch_backend import TorchBackend

BACKENDS: dict[str, SparseConvBackend] = {backend.name: backend for backend in (TorchBackend(), SpconvBackend())}
REFERENCE_BACKEND = "torch"  # the one every other backend is compared with


def get_backend(name: str) -> SparseConvBackend:
    """The backend called ``name``; ValueError listing the valid names otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"unknown sparse conv backend {name!r}; valid: {list(BACKENDS)}")
    return BACKENDS[name]


def available_backends() -> list[str]:
    """The names of the backends that can run here (their packages are installed)."""
    return [name for name, backend in BACKENDS.items() if backend.available()]


__all__ = ["BACKENDS", "REFERENCE_BACKEND", "SparseConvBackend", "available_backends", "get_backend"]
