"""What a sparse-conv backend is: an object that runs a conv module on a SparseTensor.

Every backend computes the same thing for the same module and weights: the output sites in the canonical
order of the torch backend (SubM: the input's sites; regular: ascending linearised key; inverse: the
paired conv's input sites) and their features. The backend-equivalence suite
(tests/backbones/test_backends.py) and the meter tests run over every entry of
:data:`backbones.backends.BACKENDS`, so a new backend is one module here plus one entry there.
"""
from __future__ import annotations

import abc

import torch

from voxelize.sparse_tensor import SparseTensor


class SparseConvBackend(abc.ABC):
    name: str = ""
    requirement: str = ""  # what to install when unavailable, e.g. "pip install 'sparsevox[spconv]'"

    def available(self) -> bool:
        """Whether this backend can run here (its package is installed)."""
        return True

    @abc.abstractmethod
    def conv(self, module, x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> SparseTensor:
        """``module(x)`` with ``weight`` [C_out, kD, kH, kW, C_in] and ``bias`` (C_out,) or None, where
        ``module`` is a :class:`backbones.sparse_modules.SparseConvolution`. The output tensor's
        ``kernel_map`` is the project's KernelMap the backend used, or None when it used its own."""

    def runs_bfloat16(self, device_type: str) -> bool:
        """Whether the backend takes bfloat16 features and weights on ``device_type`` ('cpu', 'cuda')."""
        return True

    def stored_pairs(self, module, x: SparseTensor) -> int | None:
        """The true number of kernel-map pairs the backend stored for ``module``'s last forward on ``x``'s
        lineage, when it keeps a map of its own; None when the project's KernelMap is the one to count."""
        return None
