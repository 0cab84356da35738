"""The densification meter: how the set of active sites grows, layer by layer, and what it costs.

    with DensificationMeter(model) as meter:
        model(tensor)
    report = meter.report()          # a DensificationReport: .table(), .to_json(), .to_csv(), .plot()

Hooks record every sparse conv of the model, on either backend. Pair counts are the true counts of
the project's own kernel maps (the map the torch backend used; for the spconv backend, the map
built from the same input, because spconv stores only half the offsets of a SubM map). The
activation statistics are taken from the activation that follows a conv (the first ReLU or k-WTA
call on that conv's sites, e.g. after BatchNorm, or after the residual addition of a block).

What a sparsity-aware kernel could skip is counted from each conv's *input* features, i.e. the
previous layer's output after its activation (and after site pruning or a residual addition, if
any; for the first conv, the voxel features):
- ``skippable_macs``: pairs whose input site's feature row is entirely zero, x C_in x C_out — a
  kernel that tests each gathered row skips them;
- ``zero_input_macs``: the zero elements of each pair's input row, x C_out — a kernel that skips
  single zero inputs (as k-WTA's zeros need) skips these; it includes ``skippable_macs``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from atomic_files import format_from_name, write_figure_atomically
from backbones.activation_sparsity import ACTIVATIONS, activation_statistics
from backbones.backends import get_backend
from backbones.kernel_map import KernelMap
from backbones.sparse_modules import SparseConvolution
from optional_dependencies import require
from voxelize.sparse_tensor import SparseTensor

NON_NEGATIVE_ACTIVATIONS = (nn.ReLU, nn.ReLU6)


@dataclass
class SampleStats:
    """One batch sample's numbers for one layer."""
    sites_in: int
    sites_out: int
    pairs: int
    macs: int
    skippable_macs: int = 0
    zero_input_macs: int = 0
    active_ratio: float | None = None
    hoyer: float | None = None


@dataclass
class LayerRecord:
    """One sparse conv call. Totals over the batch; ``samples`` holds each sample's numbers."""
    name: str
    kind: str                   # 'subm' | 'regular' | 'inverse'
    kernel_size: tuple
    stride: tuple
    tensor_stride: tuple        # of the output, in input voxels along (z, y, x)
    channels_in: int
    channels_out: int
    spatial_shape: tuple        # of the output grid
    batch_size: int
    sites_in: int
    sites_out: int
    pairs: int                  # true kernel-map pairs (input, output, offset), centre included
    macs: int                   # multiply-adds done: pairs x C_in x C_out
    dense_macs: int             # the equivalent dense conv: output voxels x K x C_in x C_out
    skippable_macs: int = 0     # pairs whose input row is all zeros x C_in x C_out (module docstring)
    zero_input_macs: int = 0    # zero elements of each pair's input row x C_out
    active_ratio: float | None = None   # non-zero fraction of the activation after this conv
    hoyer: float | None = None          # Hoyer sparsity of that activation
    channel_zero_fraction: list[float] | None = None  # per output channel: share of sites at 0 after it
    samples: list[SampleStats] = field(default_factory=list)

    @property
    def growth(self) -> float | None:
        """Output sites / input sites (exactly 1 for SubM)."""
        return self.sites_out / self.sites_in if self.sites_in else None

    @property
    def occupancy(self) -> float:
        """Share of the output grid's voxels that are active."""
        return self.sites_out / (self.batch_size * math.prod(self.spatial_shape))

    @property
    def dead_channels(self) -> int | None:
        """Output channels that are zero at every site after the activation."""
        return None if self.channel_zero_fraction is None else sum(f == 1.0 for f in self.channel_zero_fraction)


COLUMNS = ["name", "kind", "kernel_size", "stride", "tensor_stride", "channels_in", "channels_out", "sites_in",
           "sites_out", "growth", "occupancy", "pairs", "macs", "dense_macs", "skippable_macs", "zero_input_macs",
           "active_ratio", "hoyer", "dead_channels", "channel_zero_fraction"]


@dataclass
class DensificationReport:
    """The layers a meter recorded, in call order."""
    layers: list[LayerRecord]
    label: str = ""

    def rows(self) -> list[dict]:
        return [{column: getattr(layer, column) for column in COLUMNS} for layer in self.layers]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_skippable_macs(self) -> int:
        return sum(layer.skippable_macs for layer in self.layers)

    @property
    def total_zero_input_macs(self) -> int:
        return sum(layer.zero_input_macs for layer in self.layers)

    def to_json(self) -> str:
        layers = [dict(asdict(layer), growth=layer.growth, occupancy=layer.occupancy, dead_channels=layer.dead_channels)
                  for layer in self.layers]
        return json.dumps({"label": self.label, "total_macs": self.total_macs,
                           "total_skippable_macs": self.total_skippable_macs,
                           "total_zero_input_macs": self.total_zero_input_macs, "layers": layers}, indent=1)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
        return out.getvalue()

    def table(self) -> str:
        """A fixed-width table for the terminal."""
        header = f"{'layer':<26} {'kind':<7} {'k':<6} {'s':<6} {'ts':<8} {'sites in':>9} {'sites out':>9} " \
                 f"{'growth':>7} {'occup.':>8} {'pairs':>9} {'GMAC':>7} {'skip GMAC':>9} {'dense GMAC':>10} " \
                 f"{'active':>7} {'hoyer':>6} {'dead ch':>7}"
        lines = [f"== {self.label} ==" if self.label else "", header, "-" * len(header)]
        for layer in self.layers:
            lines.append(
                f"{layer.name[-26:]:<26} {layer.kind:<7} {_short(layer.kernel_size):<6} {_short(layer.stride):<6} "
                f"{_short(layer.tensor_stride):<8} {layer.sites_in:>9} {layer.sites_out:>9} "
                f"{_fmt(layer.growth, '.3f'):>7} {layer.occupancy:>8.2e} {layer.pairs:>9} {layer.macs / 1e9:>7.3f} "
                f"{layer.skippable_macs / 1e9:>9.3f} {layer.dense_macs / 1e9:>10.1f} "
                f"{_fmt(layer.active_ratio, '.3f'):>7} {_fmt(layer.hoyer, '.3f'):>6} "
                f"{_fmt(layer.dead_channels, 'd'):>7}")
        lines.append(f"total: {self.total_macs / 1e9:.3f} GMAC done, {self.total_skippable_macs / 1e9:.3f} of them on "
                     f"all-zero input rows, {self.total_zero_input_macs / 1e9:.3f} on zero input elements")
        return "\n".join(line for line in lines if line)


def _csv_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    if isinstance(value, list):
        return " ".join(format(v, ".6g") for v in value)
    return value


def _short(triple) -> str:
    return str(triple[0]) if len(set(triple)) == 1 else "x".join(map(str, triple))


def _fmt(value, spec) -> str:
    return "-" if value is None else format(value, spec)


PLOT_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def plot_format(path: str) -> str:
    """The matplotlib format of a plot file name; ValueError for an extension not in :data:`PLOT_FORMATS`."""
    return format_from_name(path, PLOT_FORMATS, "plot")


def plot_reports(reports: list[DensificationReport], path: str) -> None:
    """Two panels: active sites per layer (log scale) and multiply-adds per layer, one line per report,
    in the format the name asks for (:func:`plot_format`), written atomically."""
    encoding = plot_format(path)
    # A Figure of its own, not pyplot's: the library never switches the process's matplotlib backend.
    figure = require("matplotlib.figure", "plotting densification reports").Figure(figsize=(11, 8))
    sites, macs = figure.subplots(2, 1, sharex=True)
    for report in reports:
        positions = range(len(report.layers))
        sites.plot(positions, [layer.sites_out for layer in report.layers], marker="o", label=report.label)
        macs.plot(positions, [layer.macs / 1e9 for layer in report.layers], marker="o", label=report.label)
    sites.set_yscale("log")
    sites.set_ylabel("active output sites")
    macs.set_ylabel("GMAC done")
    longest = max(reports, key=lambda r: len(r.layers))
    macs.set_xticks(range(len(longest.layers)), [layer.name for layer in longest.layers], rotation=75, fontsize=7)
    for axis in (sites, macs):
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    write_figure_atomically(figure, path, encoding, dpi=110)


class DensificationMeter:
    """Context manager recording every sparse conv of ``model`` (see the module docstring)."""

    def __init__(self, model: nn.Module, per_sample: bool = True):
        self.model = model
        self.per_sample = per_sample
        self.records: list[LayerRecord] = []
        self._pending: list[tuple[LayerRecord, torch.Tensor]] = []  # convs awaiting their activation
        self._hooks = []
        self._names = {module: name for name, module in model.named_modules()}
        self._pairs_per_sample: dict[int, tuple[KernelMap, list[int]]] = {}  # the map is kept alive with its id

    def __enter__(self) -> "DensificationMeter":
        for module in self.model.modules():
            if isinstance(module, SparseConvolution):
                self._hooks.append(module.register_forward_hook(self._record_conv))
            elif isinstance(module, ACTIVATIONS):
                self._hooks.append(module.register_forward_hook(self._record_activation))
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def reset(self) -> None:
        self.records.clear()
        self._pending.clear()
        self._pairs_per_sample.clear()

    def report(self, label: str = "") -> DensificationReport:
        return DensificationReport(list(self.records), label)

    @staticmethod
    def _kernel_map(module: SparseConvolution, x: SparseTensor, output: SparseTensor) -> KernelMap:
        """The project's map the forward used, or (a backend with maps of its own) one built from ``x``."""
        kernel_map = output.kernel_map
        if kernel_map is None or kernel_map.in_coords is not x.coords:
            with torch.no_grad():
                kernel_map = module.kernel_map(x)
        return kernel_map

    def _record_conv(self, module: SparseConvolution, inputs, output: SparseTensor) -> None:
        x = inputs[0]
        stored = get_backend(module.backend).stored_pairs(module, x)
        pairs = stored if x.batch_size == 1 or not self.per_sample else None
        kernel_map = self._kernel_map(module, x, output) if pairs is None else None
        pairs = kernel_map.num_pairs if kernel_map is not None else pairs
        stride = kernel_map.stride if kernel_map is not None else module.stride
        if module.kind == "inverse" and kernel_map is None:
            stride = tuple(i // o for i, o in zip(x.tensor_stride, output.tensor_stride))
        channels = module.in_channels * module.out_channels
        volume = math.prod(module.kernel_size)
        record = LayerRecord(
            name=self._names.get(module, type(module).__name__), kind=module.kind,
            kernel_size=module.kernel_size, stride=stride, tensor_stride=output.tensor_stride,
            channels_in=module.in_channels, channels_out=module.out_channels,
            spatial_shape=output.spatial_shape, batch_size=x.batch_size, sites_in=x.num_sites,
            sites_out=output.num_sites, pairs=pairs, macs=pairs * channels,
            dense_macs=x.batch_size * math.prod(output.spatial_shape) * volume * channels)
        out_batch = output.coords[:, 0].long()
        if self.per_sample and x.batch_size == 1:
            record.samples = [SampleStats(x.num_sites, output.num_sites, pairs, pairs * channels)]
        elif self.per_sample:
            if id(kernel_map) not in self._pairs_per_sample:
                map_batch = kernel_map.out_coords[:, 0].long().index_select(0, kernel_map.out_rows)
                self._pairs_per_sample[id(kernel_map)] = (
                    kernel_map, torch.bincount(map_batch, minlength=x.batch_size).tolist())
            pairs = self._pairs_per_sample[id(kernel_map)][1]
            sites_in = torch.bincount(x.coords[:, 0].long(), minlength=x.batch_size).tolist()
            sites_out = torch.bincount(out_batch, minlength=x.batch_size).tolist()
            record.samples = [SampleStats(sites_in[b], sites_out[b], pairs[b], pairs[b] * channels)
                              for b in range(x.batch_size)]
        self._count_skippable(record, module, x, kernel_map)
        self.records.append(record)
        self._pending.append((record, out_batch))

    def _count_skippable(self, record: LayerRecord, module: SparseConvolution, x: SparseTensor,
                         kernel_map: KernelMap | None) -> None:
        """Fill in the skippable multiply-adds of ``record`` from the zeros of the conv's input ``x``."""
        zeros = (x.features.detach() == 0).sum(1)  # (N,) zero elements per input row
        if x.num_sites == 0 or not bool(zeros.any()):
            return
        if kernel_map is None:
            with torch.no_grad():
                kernel_map = module.kernel_map(x)  # a backend's own map was counted: build ours for the rows
        pairs_per_row = torch.bincount(kernel_map.in_rows, minlength=x.num_sites)
        skippable_pairs = pairs_per_row * (zeros == module.in_channels)
        zero_inputs = pairs_per_row * zeros
        record.skippable_macs = int(skippable_pairs.sum()) * module.in_channels * module.out_channels
        record.zero_input_macs = int(zero_inputs.sum()) * module.out_channels
        if len(record.samples) == 1:
            record.samples[0].skippable_macs, record.samples[0].zero_input_macs = \
                record.skippable_macs, record.zero_input_macs
        elif record.samples:
            batch = x.coords[:, 0].long()
            per_sample = torch.zeros((2, x.batch_size), dtype=torch.int64, device=zeros.device)
            per_sample.index_add_(1, batch, torch.stack([skippable_pairs, zero_inputs]))
            for sample, (rows_pairs, zero_count) in zip(record.samples, per_sample.t().tolist()):
                sample.skippable_macs = rows_pairs * module.in_channels * module.out_channels
                sample.zero_input_macs = zero_count * module.out_channels

    def _record_activation(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        # The most recent conv still waiting for its activation, on the same sites.
        for index in range(len(self._pending) - 1, -1, -1):
            record, batch = self._pending[index]
            if record.sites_out == output.shape[0] and record.channels_out == output.shape[1]:
                del self._pending[index]
                break
        else:
            return
        features = output.detach()
        non_negative = isinstance(module, NON_NEGATIVE_ACTIVATIONS)
        record.active_ratio, record.hoyer = activation_statistics(features, non_negative)
        if features.shape[0]:
            record.channel_zero_fraction = [count / features.shape[0] for count in (features == 0).sum(0).tolist()]
        if self.per_sample and record.batch_size > 1:
            for b, sample in enumerate(record.samples):
                sample.active_ratio, sample.hoyer = activation_statistics(features[batch == b], non_negative)
        elif self.per_sample and record.samples:
            record.samples[0].active_ratio, record.samples[0].hoyer = record.active_ratio, record.hoyer


def measure(model: nn.Module, tensor: SparseTensor, label: str = "") -> DensificationReport:
    """One no-grad forward of ``model`` on ``tensor`` under a meter; its report."""
    with torch.no_grad(), DensificationMeter(model) as meter:
        model(tensor)
    return meter.report(label)


def conv_type_variants(backbone_type: str, in_channels: int, backend: str = "torch", state_dict: dict | None = None,
                       seed: int = 0, prune_topk: float | None = None, **backbone_kwargs) -> dict[str, nn.Module]:
    """The SSC backbone and its all-regular counterpart (and, with ``prune_topk``, the regular one with
    top-k site pruning: k sites per sample if >= 1, else that fraction), by label, with the same
    weights (``state_dict``, or seeded random ones), in eval mode. Layer names are the same in each."""
    from backbones.voxel_backbones import build_backbone

    variants = {"ssc": dict(conv_type="subm"), "regular": dict(conv_type="regular")}
    if prune_topk is not None:
        if not (0 < prune_topk < 1 or (prune_topk >= 1 and float(prune_topk).is_integer())):
            raise ValueError(f"prune_topk must be a fraction in (0, 1) or a whole number of sites k >= 1, "
                             f"got {prune_topk:g}")
        pruning = {"k": int(prune_topk)} if prune_topk >= 1 else {"fraction": float(prune_topk)}
        variants[f"regular + top-{prune_topk:g} sites"] = dict(conv_type="regular", site_pruning=pruning)
    torch.manual_seed(seed)
    models, weights = {}, state_dict
    for label, options in variants.items():
        model = build_backbone(backbone_type, in_channels=in_channels, backend=backend,
                               **backbone_kwargs, **options).eval()
        if weights is None:
            weights = model.state_dict()
        model.load_state_dict(weights)
        models[label] = model
    return models


def compare_conv_types(backbone_type: str, tensor: SparseTensor, backend: str = "torch",
                       state_dict: dict | None = None, seed: int = 0, prune_topk: float | None = None,
                       **backbone_kwargs) -> list[DensificationReport]:
    """One report per variant of :func:`conv_type_variants` on ``tensor``."""
    models = conv_type_variants(backbone_type, tensor.num_channels, backend, state_dict, seed, prune_topk,
                                **backbone_kwargs)
    return [measure(model, tensor.fresh_copy(), label) for label, model in models.items()]
