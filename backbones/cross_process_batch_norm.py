"""BatchNorm over the union of every process's batch, on any device and process-group backend.

Under DistributedDataParallel each process sees only its share of the global batch, so plain
BatchNorm normalises with per-process statistics and training differs from one process with the
same global batch. torch's SyncBatchNorm fixes that on GPUs only; this one all-reduces the
per-channel sum, sum of squares and count (differentiably: its backward sums the gradients of the
statistics over the processes, as the single-process graph would), so gloo on CPU works too.
Outside a multi-process training run it is plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class CrossProcessBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over dim 1 (channels) of inputs (N, C, ...), statistics shared by all processes in training."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected input (N, C, ...), got shape {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return x if x.numel() == 0 else super().forward(x)
        # Every process joins the all-reduce, also one whose batch has no sites (it adds zeros).
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        values = x.float()
        count = values.new_tensor([x.numel() // max(channels, 1)])
        stats = _SumOverProcesses.apply(torch.cat([values.sum(dims), (values * values).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total.clamp_min(1)
        variance = (stats[channels:2 * channels] / total.clamp_min(1) - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = variance * total / (total - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (values - mean.view(shape)) * torch.rsqrt(variance.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


class _SumOverProcesses(torch.autograd.Function):
    """y = sum of x over the processes; each process's x feeds every process's loss, so the gradient
    of x is the sum of the processes' gradients of y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def convert_to_cross_process_batch_norm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`CrossProcessBatchNorm` holding the same
    parameters and running statistics (in place for children; returns the possibly new root)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossProcessBatchNorm):
        converted = CrossProcessBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                          module.track_running_stats)
        converted.load_state_dict(module.state_dict())  # copies onto converted's tensors, then moved
        device = next(iter(module.state_dict().values())).device if module.state_dict() else None
        return converted.train(module.training).to(device)
    for name, child in module.named_children():
        setattr(module, name, convert_to_cross_process_batch_norm(child))
    return module
