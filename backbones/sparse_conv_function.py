"""Gather → GEMM → scatter-add over kernel offsets, with an explicit backward.

For each offset k with pairs (in_rows, out_rows):
    forward:  out[out_rows]    += x[in_rows] @ W_k.T            W_k = weight[:, k, :]  (C_out, C_in)
    backward: grad_x[in_rows]  += grad_out[out_rows] @ W_k
              grad_W_k          = grad_out[out_rows].T @ x[in_rows]
Gathers use ``index_select`` and scatters ``index_add_`` (both several times faster than
``x[idx]`` indexing on CPU, and deterministic there). Low-precision inputs (bf16/fp16 under
autocast) multiply in that precision and accumulate in fp32.
"""
from __future__ import annotations

import torch

from backbones.kernel_map import KernelMap


def _offset_weights(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, kD, kH, kW, C_in] → (K, C_out, C_in), contiguous per offset (``F.linear`` layout)."""
    c_out, c_in = weight.shape[0], weight.shape[-1]
    return weight.reshape(c_out, -1, c_in).transpose(0, 1).contiguous()


def _onednn_linear_dtypes() -> tuple:
    """The dtypes oneDNN's linear multiplies on this machine: none where the op is missing, fp32, and bf16
    only with AVX-512 (on an AVX2 CPU it fails to build a bf16 primitive, so bf16 takes ``torch.mm``)."""
    try:
        if not (hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()):
            return ()
        return (torch.float32, torch.bfloat16) if torch.ops.mkldnn._is_mkldnn_bf16_supported() else (torch.float32,)
    except (AttributeError, RuntimeError):
        return ()


_ONEDNN_DTYPES = _onednn_linear_dtypes()


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for (P, C_in) x (C_out, C_in) through oneDNN's linear on CPU where it exists.

    oneDNN's linear is the fastest path for large square GEMMs on the AMD benchmark machine (2x MKL's
    ``torch.mm``), so it measures the machine's peak; it is a private op, so anything unusual (other
    devices, dtypes, an op that is missing) takes the public path.
    """
    if x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES and x.shape[0]:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return torch.mm(x, weight.t())


# The GEMM of the conv loop: 'mm' (``torch.mm`` into a reused buffer) or 'onednn' (:func:`linear`).
# Issue 3 measured oneDNN at 1.3-1.6x ``torch.mm`` per GEMM; in the whole loop (issue 14, 1 thread,
# CPU time, interleaved, machine under load) 'mm' was 12-20% faster per nuScenes SubM layer and
# 8-18% per VoxelResBackBone8x forward, with bit-identical results (the same sgemm underneath,
# without oneDNN's per-call weight handling and output allocation). ``tools/benchmark.py conv
# --conv-gemm`` times either.
CONV_GEMM = "mm"
CONV_GEMMS = ("onednn", "mm")


class _RowBuffers:
    """Two scratch matrices reused by every offset of one conv call: gathered rows (P_max, C_a) and
    their products (P_max, C_b). One allocation per call instead of two per offset: glibc returns
    large freed blocks to the OS and page-faults them back on the next allocation."""

    def __init__(self, like: torch.Tensor, rows: int, gathered_channels: int, product_channels: int):
        self.gathered = like.new_empty((rows, gathered_channels))
        self.products = like.new_empty((rows, product_channels))

    def gather(self, source: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return torch.index_select(source, 0, rows, out=self.gathered[:rows.numel()])

    def product(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``a @ weight.T`` for (P, C_a) x (C_b, C_a), by :data:`CONV_GEMM`; valid until the next call."""
        if CONV_GEMM == "onednn":
            return linear(a, weight)
        return torch.mm(a, weight.t(), out=self.products[:a.shape[0]])


def conv_gemm(a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``a @ weight.T`` into a new tensor, by :data:`CONV_GEMM`."""
    return linear(a, weight) if CONV_GEMM == "onednn" else torch.mm(a, weight.t())


def _largest_offset(kernel_map: KernelMap) -> int:
    return max((in_rows.numel() for _, in_rows, _ in kernel_map.offset_pairs), default=0)


class SparseConvFunction(torch.autograd.Function):
    """Gathered rows go into one reused buffer per call; the forward GEMMs take :data:`CONV_GEMM`."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
        weights = _offset_weights(weight)
        accumulate = torch.float32 if features.dtype in (torch.bfloat16, torch.float16) else features.dtype
        buffers = _RowBuffers(features, _largest_offset(kernel_map), weights.shape[2], weights.shape[1])
        if kernel_map.identity_offset is not None:  # the centre of a SubM map starts the sum: no gather, no scatter
            out = conv_gemm(features, weights[kernel_map.identity_offset]).to(accumulate)
        else:
            out = features.new_zeros((kernel_map.num_out, weights.shape[1]), dtype=accumulate)
        for offset, in_rows, out_rows in kernel_map.offset_pairs:
            products = buffers.product(buffers.gather(features, in_rows), weights[offset])
            out.index_add_(0, out_rows, products.to(accumulate))
        ctx.save_for_backward(features, weights)
        ctx.kernel_map = kernel_map
        ctx.weight_shape = weight.shape
        return out.to(features.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, weights = ctx.saved_tensors
        kernel_map: KernelMap = ctx.kernel_map
        grad_out = grad_out.to(features.dtype).contiguous()
        grad_features = grad_weights = None
        accumulate = torch.float32 if features.dtype in (torch.bfloat16, torch.float16) else features.dtype
        if ctx.needs_input_grad[0]:
            grad_features = features.new_zeros(features.shape, dtype=accumulate)
        if ctx.needs_input_grad[1]:
            grad_weights = torch.zeros(weights.shape, dtype=accumulate, device=weights.device)
        if kernel_map.identity_offset is not None:
            k = kernel_map.identity_offset
            if grad_features is not None:
                grad_features += torch.mm(grad_out, weights[k])
            if grad_weights is not None:
                grad_weights[k] = torch.mm(grad_out.t(), features)
        largest = _largest_offset(kernel_map)
        grad_buffers = _RowBuffers(features, largest, weights.shape[1], weights.shape[2])
        feature_rows = features.new_empty((largest, weights.shape[2]))
        for offset, in_rows, out_rows in kernel_map.offset_pairs:
            grad_rows = grad_buffers.gather(grad_out, out_rows)
            if grad_features is not None:
                products = torch.mm(grad_rows, weights[offset], out=grad_buffers.products[:grad_rows.shape[0]])
                grad_features.index_add_(0, in_rows, products.to(accumulate))
            if grad_weights is not None:
                rows = torch.index_select(features, 0, in_rows, out=feature_rows[:in_rows.numel()])
                grad_weights[offset] = torch.mm(grad_rows.t(), rows)
        if grad_features is not None:
            grad_features = grad_features.to(features.dtype)
        if grad_weights is not None:
            grad_weights = grad_weights.transpose(0, 1).reshape(ctx.weight_shape).to(weights.dtype)
        return grad_features, grad_weights, None


def sparse_conv(features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
    """(N_in, C_in) features through a kernel map with weight [C_out, kD, kH, kW, C_in] → (N_out, C_out).

    Under autocast the inputs are cast to the autocast dtype (e.g. bf16 on CPU) and the result
    has that dtype; otherwise everything runs in the features' dtype.
    """
    if weight.shape[-1] != features.shape[1]:
        raise ValueError(f"features have {features.shape[1]} channels, the weight expects {weight.shape[-1]}")
    device_type = features.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return SparseConvFunction.apply(features.to(dtype), weight.to(dtype), kernel_map)
    return SparseConvFunction.apply(features, weight.to(features.dtype), kernel_map)
