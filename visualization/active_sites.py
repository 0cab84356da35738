"""Which sites a sparse layer had on its input and its output, by the densification meter's layer name.

    sites = capture_active_sites(backbone, tensor, ["conv_input.0", "conv2.0.0"])
    sites["conv2.0.0"].from_input()   # (M,) bool: output sites that cover an input site

An output site "comes from the input" when its cell overlaps the cell of an active input site:
with the cells of ``scene_geometry.voxel_cells`` (site c at tensor stride s covers input voxels
c*s .. c*s + s - 1), that is, both mapped to the coarser of the two grids, they coincide. The other
output sites were added by densification. A SubM layer adds none; a stride-1 regular conv adds
the dilation of the input by its kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbones.densification_meter import conv_type_variants
from backbones.sparse_modules import SparseConvolution
from voxelize.sparse_tensor import SparseTensor


@dataclass
class LayerSites:
    """The active sites around one sparse conv call; coords (N, 4) int [b, z, y, x]."""
    name: str
    kind: str                       # 'subm' | 'regular' | 'inverse'
    input_coords: torch.Tensor
    input_stride: tuple             # tensor stride (z, y, x) of the input
    output_coords: torch.Tensor
    output_stride: tuple

    def from_input(self) -> torch.Tensor:
        """(M,) bool over the output sites: True where the site's cell overlaps an input site's cell."""
        coarse = torch.tensor([max(i, o) for i, o in zip(self.input_stride, self.output_stride)])

        def coarse_keys(coords: torch.Tensor, stride: tuple) -> torch.Tensor:
            cells = coords[:, 1:].long() * torch.tensor(stride) // coarse
            batch = coords[:, 0].long()
            return ((batch * (1 << 18) + cells[:, 0]) * (1 << 18) + cells[:, 1]) * (1 << 18) + cells[:, 2]

        return torch.isin(coarse_keys(self.output_coords, self.output_stride),
                          coarse_keys(self.input_coords, self.input_stride))


def sparse_layer_names(model: nn.Module) -> list[str]:
    """The names the meter gives the sparse convs of ``model``, in module order."""
    return [name for name, module in model.named_modules() if isinstance(module, SparseConvolution)]


def capture_active_sites(model: nn.Module, tensor: SparseTensor, layer_names) -> dict[str, LayerSites]:
    """Run ``model`` on ``tensor`` (no grad) and keep the input and output sites of the named sparse
    convs (each layer's first call). Unknown names raise, listing the valid ones."""
    modules = dict(model.named_modules())
    valid = sparse_layer_names(model)
    unknown = [name for name in layer_names if name not in valid]
    if unknown:
        raise ValueError(f"no sparse layer named {unknown}; valid layer names: {valid}")
    captured: dict[str, LayerSites] = {}

    def keep(name):
        def hook(module: SparseConvolution, inputs, output: SparseTensor):
            if name not in captured:
                x = inputs[0]
                captured[name] = LayerSites(name, module.kind, x.coords.cpu(), tuple(x.tensor_stride),
                                            output.coords.cpu(), tuple(output.tensor_stride))
            if len(captured) == len(set(layer_names)):
                raise _AllCaptured  # the layers after the last one asked for need not run
        return hook

    hooks = [modules[name].register_forward_hook(keep(name)) for name in layer_names]
    try:
        with torch.no_grad():
            model(tensor)
    except _AllCaptured:
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return {name: captured[name] for name in layer_names}


class _AllCaptured(Exception):
    pass


def compare_active_sites(backbone_type: str, tensor: SparseTensor, layer_names, variants=("ssc", "regular"),
                         **variant_options) -> dict[str, dict[str, LayerSites]]:
    """:func:`capture_active_sites` for each conv-type variant of the backbone (same weights; options
    of ``backbones.densification_meter.conv_type_variants``), by variant label then layer name."""
    models = conv_type_variants(backbone_type, tensor.num_channels, **variant_options)
    unknown = [variant for variant in variants if variant not in models]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; valid: {list(models)}")
    return {variant: capture_active_sites(models[variant], tensor.fresh_copy(), layer_names) for variant in variants}
