"""Running a sparsevox conv module through spconv with the module's own weight.

- CPU: ``ConvAlgo.Native`` (spconv's implicit-GEMM algorithms assert CUDA); CUDA: spconv's defaults.
- Bias: spconv's CPU kernels fail on a biased conv in eval mode, so spconv runs without bias and
  the bias is added here, identically in both modes.
- Order: spconv emits a regular conv's outputs in discovery order; they are sorted into the
  canonical order (ascending linearised key) so both backends agree row by row. The permutation
  is kept under the indice key, because spconv's paired inverse conv expects its input rows in
  spconv's own order.
- spconv's ``indice_dict`` (its kernel-map cache) lives in the SparseTensor lineage's
  ``kernel_map_cache`` under ``"spconv_indice_dict"``, replaced by each layer's output dict as
  spconv itself propagates it.
"""
from __future__ import annotations

import torch

from backbones.backends.base import SparseConvBackend
from backbones.backends.torch_backend import TorchBackend
from optional_dependencies import available, require
from voxelize.hash_map import pack_keys
from voxelize.sparse_tensor import SparseTensor

INDICE_DICT = "spconv_indice_dict"
EMPTY_INPUT_BACKEND = TorchBackend()


def _spconv_layer(module, device: torch.device):
    """The spconv twin of ``module`` for ``device``'s type, built once; it holds no parameters."""
    spconv = require("spconv.pytorch", "the spconv backend")

    layers = module.__dict__.setdefault("_spconv_layers", {})  # not a registered submodule
    if device.type not in layers:
        algo = spconv.ConvAlgo.Native if device.type == "cpu" else None
        common = dict(bias=False, indice_key=module.indice_key, algo=algo)
        c_in, c_out, kernel = module.in_channels, module.out_channels, list(module.kernel_size)
        if module.kind == "subm":
            layer = spconv.SubMConv3d(c_in, c_out, kernel, dilation=list(module.dilation), **common)
        elif module.kind == "regular":
            layer = spconv.SparseConv3d(c_in, c_out, kernel, stride=list(module.stride),
                                        padding=list(module.padding), dilation=list(module.dilation), **common)
        else:
            layer = spconv.SparseInverseConv3d(c_in, c_out, kernel, **common)
        del layer.weight
        layers[device.type] = layer
    return layers[device.type]


def spconv_forward(module, x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> SparseTensor:
    """``module(x)`` with ``weight`` and ``bias`` computed by spconv; the same output coordinates, order
    and features as the torch backend."""
    spconv = require("spconv.pytorch", "the spconv backend")

    cache = x.kernel_map_cache
    indice_dict = dict(cache.get(INDICE_DICT, {}))
    features = x.features
    order_key = ("spconv_order", module.indice_key)
    if module.kind == "regular" and module.indice_key is not None:
        indice_dict.pop(module.indice_key, None)  # the same input seen again: spconv only reuses SubM maps
    if module.kind == "inverse":
        if order_key not in cache:
            raise ValueError(f"no spconv regular conv with indice_key {module.indice_key!r} ran on this "
                             f"input's lineage")
        order, stride = cache[order_key]
        features = torch.empty_like(features).index_copy_(0, order, features)  # back to spconv's order
    layer = _spconv_layer(module, x.device)
    layer.weight = weight  # a plain tensor (e.g. BatchNorm folded in) keeps its autograd history
    try:
        out = layer(spconv.SparseConvTensor(features, x.coords, list(x.spatial_shape), x.batch_size,
                                            indice_dict=indice_dict))
    finally:
        del layer.weight  # keep no reference to the module's parameter
    cache[INDICE_DICT] = out.indice_dict
    out_features, out_coords = out.features, out.indices
    stride = module.stride if module.kind != "inverse" else stride
    if module.kind == "regular":
        out_shape = tuple(out.spatial_shape)
        order = torch.argsort(pack_keys(out_coords, out_shape, x.batch_size))
        out_features, out_coords = out_features.index_select(0, order), out_coords.index_select(0, order)
        if module.indice_key is not None:
            cache[order_key] = (order, module.stride)
    elif module.kind == "subm":
        out_coords = x.coords
    if bias is not None:
        out_features = out_features + bias.to(out_features.dtype)
    return module.output_tensor(x, out_coords, tuple(out.spatial_shape), out_features, stride)


class SpconvBackend(SparseConvBackend):
    name = "spconv"
    requirement = "pip install 'sparsevox[spconv]'"

    def available(self) -> bool:
        return available("spconv")

    def conv(self, module, x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> SparseTensor:
        if not x.num_sites:  # spconv does not take empty tensors; the reference gives the same empty result
            return EMPTY_INPUT_BACKEND.conv(module, x, weight, bias)
        return spconv_forward(module, x, weight, bias)

    def runs_bfloat16(self, device_type: str) -> bool:
        return device_type == "cuda"  # its CPU kernels take no bfloat16

    def stored_pairs(self, module, x: SparseTensor) -> int | None:
        """spconv's SubM maps hold only the offsets before the centre (the rest are their mirror images,
        the centre pairs every site with itself): true = 2 x stored + N. Its regular maps (and so their
        inverses) hold every pair."""
        entry = x.kernel_map_cache.get(INDICE_DICT, {}).get(module.indice_key) if module.indice_key else None
        if entry is None or not hasattr(entry, "indice_pair_num"):
            return None
        stored = int(entry.indice_pair_num.sum())
        return 2 * stored + x.num_sites if module.kind == "subm" else stored
