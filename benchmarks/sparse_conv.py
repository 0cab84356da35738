"""The sparse conv benchmark: torch backend vs spconv backend on real scans.

Per layer (SubM 16→16, SubM 64→64, SparseConv 16→32 k3 s2, all on the voxelized scan), for the
VoxelBackBone8x and VoxelResBackBone8x forward in eval mode (BatchNorm folded) and for a training
step of each (forward + backward, train mode): median time of each backend (interleaved), kernel-map
build time separately, achieved GFLOP/s (2 x true multiply-adds / time) and its fraction of this
machine's peak, measured in the same run: oneDNN's linear on a large fp32 and bf16 GEMM (the path
the torch backend's GEMMs take; MKL's ``torch.mm`` reaches under half of it on AMD CPUs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from backbones.kernel_map import build_regular_map, build_submanifold_map
from backbones.sparse_conv_function import linear
from backbones.sparse_modules import SparseConv3d, SparseConvolution, SubMConv3d, set_backend
from backbones.voxel_backbones import VoxelBackBone8x, VoxelResBackBone8x
from benchmarks.voxelizer import interleaved_medians
from datasets.point_files import read_points
from voxelize.presets import preset_voxelizer
from voxelize.sparse_tensor import SparseTensor


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Dense fp32 ``torch.mm`` GFLOP/s on size^3 at the current thread count (MKL on x86)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = interleaved_medians({"mm": lambda: torch.mm(a, b)}, repeats=repeats, warmup=1)["mm"]
    return 2 * size ** 3 / seconds / 1e9


def linear_peak_gflops(dtype=torch.float32, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the torch backend's GEMM (:func:`backbones.sparse_conv_function.linear`, oneDNN on
    CPU) on a size^3 product in ``dtype`` at the current thread count: the peak the backend can reach."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = interleaved_medians({"linear": lambda: linear(a, b)}, repeats=repeats, warmup=1)["linear"]
    return 2 * size ** 3 / seconds / 1e9


@dataclass
class ConvResult:
    cloud: str
    case: str
    threads: int
    sites_in: int
    sites_out: int
    gmacs: float             # forward multiply-adds (a training step does 3x: forward and two backward GEMMs)
    torch_ms: float
    spconv_ms: float
    torch_map_ms: float
    spconv_map_ms: float
    peak_gflops: float       # oneDNN linear, fp32
    peak_bf16_gflops: float  # oneDNN linear, bf16

    @property
    def ratio(self) -> float:
        return self.torch_ms / self.spconv_ms

    @property
    def flop_factor(self) -> int:
        return 3 if "train" in self.case else 1

    def gflops(self, milliseconds: float) -> float:
        return 2 * self.flop_factor * self.gmacs / milliseconds * 1e3


def _layer_cases():
    return {
        "SubM 16→16": lambda: SubMConv3d(16, 16, 3, bias=False),
        "SubM 64→64": lambda: SubMConv3d(64, 64, 3, bias=False),
        "SparseConv 16→32 k3 s2": lambda: SparseConv3d(16, 32, 3, stride=2, padding=1, bias=False),
    }


BACKBONE_CASES = {"VoxelBackBone8x": VoxelBackBone8x, "VoxelResBackBone8x": VoxelResBackBone8x}


def _spconv_pairs(tensor: SparseTensor, layer: SparseConvolution):
    import spconv.pytorch as spconv
    from spconv.pytorch import ops

    subm = layer.kind == "subm"
    return ops.get_indice_pairs(tensor.coords, tensor.batch_size, list(tensor.spatial_shape), spconv.ConvAlgo.Native,
                                list(layer.kernel_size), list(layer.stride), list(layer.padding),
                                list(layer.dilation), [0, 0, 0], subm, False)


def _torch_map(tensor: SparseTensor, layer: SparseConvolution):
    fresh = SparseTensor(tensor.features, tensor.coords, tensor.spatial_shape, tensor.batch_size, check=False)
    if layer.kind == "subm":
        return build_submanifold_map(fresh, layer.kernel_size, layer.dilation)  # grid or hash lookup included
    return build_regular_map(fresh, layer.kernel_size, layer.stride, layer.padding, layer.dilation)


def count_macs(model: torch.nn.Module, tensor: SparseTensor) -> tuple[float, int]:
    """(G multiply-adds, output sites) of one forward, from the true kernel-map pair counts."""
    macs = []

    def record(module, inputs, output):
        pairs = module.kernel_map(inputs[0]).num_pairs if module.backend == "torch" else 0
        macs.append(pairs * module.in_channels * module.out_channels)

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, SparseConvolution)]
    try:
        backend = {m.backend for m in model.modules() if isinstance(m, SparseConvolution)}
        set_backend(model, "torch")
        with torch.no_grad():
            out = model(tensor)
        set_backend(model, backend.pop())
    finally:
        for hook in hooks:
            hook.remove()
    out = out.out if hasattr(out, "out") else out
    return sum(macs) / 1e9, out.num_sites


def benchmark_conv(clouds: list[tuple[str, str]], threads=(1, 2), repeats: int = 5, seed: int = 0,
                   cases: list[str] | None = None) -> list[ConvResult]:
    """Both backends on each (path, preset) cloud: the three layers, each backbone's eval forward and
    each backbone's training step (``cases``: a subset of these case names, None: all)."""
    results = []
    for path, preset in clouds:
        voxels, _ = preset_voxelizer(preset).batch([read_points(path)])
        generator = torch.Generator().manual_seed(seed)
        name = path.rsplit("/", 1)[-1]

        def fresh(channels: int) -> SparseTensor:  # no kernel maps cached: each run builds its own
            features = torch.randn((voxels.num_sites, channels), generator=generator)
            return SparseTensor(features, voxels.coords, voxels.spatial_shape, 1, check=False)

        def voxel_input(_) -> SparseTensor:
            return SparseTensor(voxels.features, voxels.coords, voxels.spatial_shape, 1, check=False)

        all_cases = {}
        for case, make in _layer_cases().items():
            torch.manual_seed(seed)
            all_cases[case] = (make().eval(), lambda layer: fresh(layer.in_channels), False)
        for backbone_name, backbone_class in BACKBONE_CASES.items():
            torch.manual_seed(seed)
            all_cases[f"{backbone_name} (eval)"] = (backbone_class(voxels.num_channels).eval(), voxel_input, False)
            torch.manual_seed(seed)
            all_cases[f"{backbone_name} (train step)"] = (backbone_class(voxels.num_channels).train(), voxel_input,
                                                          True)
        unknown = set(cases or ()) - set(all_cases)
        if unknown:
            raise ValueError(f"unknown conv benchmark cases {sorted(unknown)}; valid: {list(all_cases)}")

        for count in threads:
            torch.set_num_threads(count)
            peaks = linear_peak_gflops(torch.float32), linear_peak_gflops(torch.bfloat16)
            for case, (model, make_input, training) in all_cases.items():
                if cases is not None and case not in cases:
                    continue
                example = make_input(model)
                gmacs, sites_out = count_macs(model, example)
                runs = {backend: _timed_run(model, make_input, backend, training) for backend in ("torch", "spconv")}
                with torch.set_grad_enabled(training):
                    medians = interleaved_medians(runs, repeats=repeats, warmup=1)
                if isinstance(model, SparseConvolution):
                    maps = interleaved_medians({"torch": lambda: _torch_map(example, model),
                                                "spconv": lambda: _spconv_pairs(example, model)},
                                               repeats=repeats, warmup=1)
                elif training:
                    maps = {"torch": float("nan"), "spconv": float("nan")}  # the maps of the eval case
                else:
                    maps = _backbone_map_times(model, make_input, repeats)
                results.append(ConvResult(name, case, count, example.num_sites, sites_out, gmacs,
                                          medians["torch"] * 1e3, medians["spconv"] * 1e3,
                                          maps["torch"] * 1e3, maps["spconv"] * 1e3, *peaks))
    return results


def _timed_run(model, make_input, backend: str, training: bool):
    def run():
        set_backend(model, backend)
        output = model(make_input(model))
        if training:  # a scalar that depends on every output feature, as a loss does
            output = output.out if hasattr(output, "out") else output
            output.features.square().mean().backward()
            model.zero_grad(set_to_none=True)
    return run


def _backbone_map_times(model, make_input, repeats: int) -> dict[str, float]:
    """Seconds spent building kernel maps in one backbone forward, per backend (median)."""
    import spconv.pytorch.ops as spconv_ops

    import backbones.sparse_modules as modules

    spent = {"torch": 0.0, "spconv": 0.0}
    originals = (modules.build_submanifold_map, modules.build_regular_map, spconv_ops.get_indice_pairs)

    def timed(function, backend):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[backend] += time.perf_counter() - start
        return wrapper

    samples = {"torch": [], "spconv": []}
    modules.build_submanifold_map = timed(originals[0], "torch")
    modules.build_regular_map = timed(originals[1], "torch")
    spconv_ops.get_indice_pairs = timed(originals[2], "spconv")
    try:
        with torch.no_grad():
            for _ in range(repeats):
                for backend in samples:
                    spent[backend] = 0.0
                    set_backend(model, backend)
                    model(make_input(model))
                    samples[backend].append(spent[backend])
    finally:
        modules.build_submanifold_map, modules.build_regular_map, spconv_ops.get_indice_pairs = originals
    return {backend: sorted(times)[len(times) // 2] for backend, times in samples.items()}


def conv_table(results: list[ConvResult]) -> str:
    """A markdown table of conv benchmark results (a training step's GFLOP/s count its three GEMMs per pair)."""
    lines = ["| cloud | case | threads | sites in → out | GMAC (fwd) | torch ms | spconv ms | torch/spconv | "
             "torch map ms | spconv map ms | torch GFLOP/s (% of fp32 / bf16 peak) | spconv GFLOP/s (% of fp32 peak) | "
             "oneDNN linear peak fp32 / bf16 GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        torch_gflops, spconv_gflops = r.gflops(r.torch_ms), r.gflops(r.spconv_ms)
        lines.append(
            f"| {r.cloud} | {r.case} | {r.threads} | {r.sites_in} → {r.sites_out} | {r.gmacs:.2f} | "
            f"{r.torch_ms:.1f} | {r.spconv_ms:.1f} | {r.ratio:.2f} | {r.torch_map_ms:.1f} | {r.spconv_map_ms:.1f} | "
            f"{torch_gflops:.0f} ({100 * torch_gflops / r.peak_gflops:.0f}% / "
            f"{100 * torch_gflops / r.peak_bf16_gflops:.0f}%) | "
            f"{spconv_gflops:.0f} ({100 * spconv_gflops / r.peak_gflops:.0f}%) | "
            f"{r.peak_gflops:.0f} / {r.peak_bf16_gflops:.0f} |")
    return "\n".join(lines)


@dataclass
class MeterResult:
    cloud: str
    backend: str
    threads: int
    plain_ms: float
    metered_ms: float

    @property
    def overhead(self) -> float:
        return self.metered_ms / self.plain_ms - 1


def benchmark_meter(clouds: list[tuple[str, str]], threads=(2,), repeats: int = 5, seed: int = 0) -> list[MeterResult]:
    """VoxelResBackBone8x eval forward with and without the densification meter, per backend."""
    from backbones.densification_meter import DensificationMeter

    results = []
    for path, preset in clouds:
        voxels, _ = preset_voxelizer(preset).batch([read_points(path)])
        torch.manual_seed(seed)
        model = VoxelResBackBone8x(voxels.num_channels).eval()

        def forward(metered: bool, backend: str):
            def run():
                set_backend(model, backend)
                x = SparseTensor(voxels.features, voxels.coords, voxels.spatial_shape, 1, check=False)
                if metered:
                    with DensificationMeter(model):
                        model(x)
                else:
                    model(x)
            return run

        for count in threads:
            torch.set_num_threads(count)
            for backend in ("torch", "spconv"):
                with torch.no_grad():
                    medians = interleaved_medians({"plain": forward(False, backend), "metered": forward(True, backend)},
                                                  repeats=repeats, warmup=1)
                results.append(MeterResult(path.rsplit("/", 1)[-1], backend, count, medians["plain"] * 1e3,
                                           medians["metered"] * 1e3))
    return results


def meter_table(results: list[MeterResult]) -> str:
    lines = ["| cloud | backend | threads | backbone ms | with meter ms | overhead |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.cloud} | {r.backend} | {r.threads} | {r.plain_ms:.1f} | {r.metered_ms:.1f} | "
                     f"{100 * r.overhead:+.1f}% |")
    return "\n".join(lines)
