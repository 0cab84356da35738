"""Gather → GEMM → scatter-add over kernel offsets, with an explicit backward.

For each offset k with pairs (in_rows, out_rows):
    forward:  out[out_rows]    += x[in_rows] @ W_k              W_k = weight[:, k, :].T  (C_in, C_out)
    backward: grad_x[in_rows]  += grad_out[out_rows] @ W_k.T
              grad_W_k          = x[in_rows].T @ grad_out[out_rows]
Gathers use ``index_select`` and scatters ``index_add_`` (both several times faster than
``x[idx]`` indexing on CPU, and deterministic there). Low-precision inputs (bf16/fp16 under
autocast) multiply in that precision and accumulate in fp32.
"""
from __future__ import annotations

import torch

from backbones.kernel_map import KernelMap


def _offset_weights(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, kD, kH, kW, C_in] → (K, C_in, C_out), contiguous per offset."""
    c_out, c_in = weight.shape[0], weight.shape[-1]
    return weight.reshape(c_out, -1, c_in).permute(1, 2, 0).contiguous()


class SparseConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, kernel_map: KernelMap) -> torch.Tensor:
        weights = _offset_weights(weight)
        accumulate = torch.float32 if features.dtype in (torch.bfloat16, torch.float16) else features.dtype
        out = features.new_zeros((kernel_map.num_out, weights.shape[2]), dtype=accumulate)
        if kernel_map.identity_offset is not None:
            out += torch.mm(features, weights[kernel_map.identity_offset])
        for offset, in_rows, out_rows in kernel_map.offset_pairs():
            products = torch.mm(features.index_select(0, in_rows), weights[offset])
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
                grad_features += torch.mm(grad_out, weights[k].t())
            if grad_weights is not None:
                grad_weights[k] = torch.mm(features.t(), grad_out)
        for offset, in_rows, out_rows in kernel_map.offset_pairs():
            grad_rows = grad_out.index_select(0, out_rows)
            if grad_features is not None:
                grad_features.index_add_(0, in_rows, torch.mm(grad_rows, weights[offset].t()).to(accumulate))
            if grad_weights is not None:
                grad_weights[offset] = torch.mm(features.index_select(0, in_rows).t(), grad_rows)
        if grad_features is not None:
            grad_features = grad_features.to(features.dtype)
        if grad_weights is not None:
            grad_weights = grad_weights.permute(2, 0, 1).reshape(ctx.weight_shape).to(weights.dtype)
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
