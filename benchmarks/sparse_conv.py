"""The sparse conv benchmark: torch backend vs spconv backend on real scans.

Per layer (SubM 16→16, SubM 64→64, SparseConv 16→32 k3 s2, all on the voxelized scan), for the
VoxelBackBone8x and VoxelResBackBone8x forward in eval mode (BatchNorm folded) and for a training
step of each (forward + backward, train mode): median time of each backend (interleaved), kernel-map
build time separately, achieved GFLOP/s (2 x true multiply-adds / time) and its fraction of this
machine's peak, measured in the same run: the torch backend's GEMM (``linear``) on a large fp32 and
bf16 product (oneDNN on CPU, where MKL's ``torch.mm`` reaches under half of it on AMD CPUs; cuBLAS on
CUDA). On a CUDA device the layers and the scan live on the GPU, and a backend that is not installed
there (spconv) has no column.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from backbones.backends import available_backends
from backbones.kernel_map import build_regular_map, build_submanifold_map
from backbones.sparse_conv_function import linear
from backbones.sparse_modules import SparseConv3d, SparseConvolution, SubMConv3d, set_backend
from backbones.voxel_backbones import VoxelBackBone8x, VoxelResBackBone8x
from benchmarks.voxelizer import device_waiter, interleaved_medians, thread_counts
from datasets.point_files import read_points
from voxelize.presets import preset_voxelizer
from voxelize.sparse_tensor import SparseTensor

COMPARED_BACKENDS = ("torch", "spconv")


def linear_peak_gflops(dtype=torch.float32, size: int | None = None, repeats: int = 5, device="cpu") -> float:
    """GFLOP/s of the torch backend's GEMM (:func:`backbones.sparse_conv_function.linear`, oneDNN on
    CPU, cuBLAS on CUDA) on a size^3 product in ``dtype``: the peak the backend can reach. ``size``
    defaults to 2048 on CPU and 8192 on CUDA (a smaller product leaves a GPU idle between launches)."""
    size = size or (8192 if torch.device(device).type == "cuda" else 2048)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    seconds = interleaved_medians({"linear": lambda: linear(a, b)}, repeats=repeats, warmup=1,
                                  device=device)["linear"]
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
    spconv_ms: float         # NaN where spconv is not installed
    torch_map_ms: float
    spconv_map_ms: float
    peak_gflops: float       # the torch backend's linear, fp32
    peak_bf16_gflops: float  # the torch backend's linear, bf16
    device: str = "cpu"

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
                   cases: list[str] | None = None, device="cpu") -> list[ConvResult]:
    """The installed backends of ``COMPARED_BACKENDS`` on each (path, preset) cloud, on ``device``: the
    three layers, each backbone's eval forward and each backbone's training step (``cases``: a subset
    of these case names, None: all)."""
    backends = [backend for backend in COMPARED_BACKENDS if backend in available_backends()]
    results = []
    for path, preset in clouds:
        voxels, _ = preset_voxelizer(preset).batch([read_points(path)])
        coords, voxel_features = voxels.coords.to(device), voxels.features.to(device)
        generator = torch.Generator().manual_seed(seed)
        name = path.rsplit("/", 1)[-1]

        def fresh(channels: int) -> SparseTensor:  # no kernel maps cached: each run builds its own
            features = torch.randn((voxels.num_sites, channels), generator=generator).to(device)
            return SparseTensor(features, coords, voxels.spatial_shape, 1, check=False)

        def voxel_input(_) -> SparseTensor:
            return SparseTensor(voxel_features, coords, voxels.spatial_shape, 1, check=False)

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

        for count in thread_counts(threads):
            peaks = (linear_peak_gflops(torch.float32, device=device),
                     linear_peak_gflops(torch.bfloat16, device=device))
            for case, (model, make_input, training) in all_cases.items():
                if cases is not None and case not in cases:
                    continue
                model.to(device)
                example = make_input(model)
                gmacs, sites_out = count_macs(model, example)
                runs = {backend: _timed_run(model, make_input, backend, training) for backend in backends}
                with torch.set_grad_enabled(training):
                    medians = interleaved_medians(runs, repeats=repeats, warmup=1, device=device)
                if isinstance(model, SparseConvolution):
                    map_builders = {"torch": lambda: _torch_map(example, model),
                                    "spconv": lambda: _spconv_pairs(example, model)}
                    maps = interleaved_medians({backend: map_builders[backend] for backend in backends},
                                               repeats=repeats, warmup=1, device=device)
                elif training:
                    maps = {}  # the maps of the eval case
                else:
                    maps = _backbone_map_times(model, make_input, repeats, backends, device)
                ms = {backend: 1e3 * seconds for backend, seconds in medians.items()}
                map_ms = {backend: 1e3 * seconds for backend, seconds in maps.items()}
                results.append(ConvResult(name, case, count, example.num_sites, sites_out, gmacs,
                                          ms["torch"], ms.get("spconv", math.nan),
                                          map_ms.get("torch", math.nan), map_ms.get("spconv", math.nan), *peaks,
                                          device=str(device)))
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


def _backbone_map_times(model, make_input, repeats: int, backends, device) -> dict[str, float]:
    """Seconds spent building kernel maps in one backbone forward, per backend (median)."""
    import backbones.sparse_modules as modules

    spent = {backend: 0.0 for backend in backends}
    wait = device_waiter(device)

    def timed(function, backend):
        def wrapper(*args, **kwargs):
            wait()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                wait()
                spent[backend] += time.perf_counter() - start
        return wrapper

    samples = {backend: [] for backend in backends}
    patched = [(modules, "build_submanifold_map", "torch"), (modules, "build_regular_map", "torch")]
    if "spconv" in backends:
        import spconv.pytorch.ops as spconv_ops
        patched.append((spconv_ops, "get_indice_pairs", "spconv"))
    originals = [getattr(owner, attribute) for owner, attribute, _ in patched]
    for (owner, attribute, backend), original in zip(patched, originals):
        setattr(owner, attribute, timed(original, backend))
    try:
        with torch.no_grad():
            for _ in range(repeats):
                for backend in samples:
                    spent[backend] = 0.0
                    set_backend(model, backend)
                    model(make_input(model))
                    samples[backend].append(spent[backend])
    finally:
        for (owner, attribute, _), original in zip(patched, originals):
            setattr(owner, attribute, original)
    return {backend: sorted(times)[len(times) // 2] for backend, times in samples.items()}


def _number(value: float, digits: int = 1, suffix: str = "") -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def conv_table(results: list[ConvResult]) -> str:
    """A markdown table of conv benchmark results (a training step's GFLOP/s count its three GEMMs per pair;
    – where a backend is not installed)."""
    lines = ["| device | cloud | case | threads | sites in → out | GMAC (fwd) | torch ms | spconv ms | torch/spconv | "
             "torch map ms | spconv map ms | torch GFLOP/s (% of fp32 / bf16 peak) | spconv GFLOP/s (% of fp32 peak) | "
             "linear peak fp32 / bf16 GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        torch_gflops, spconv_gflops = r.gflops(r.torch_ms), r.gflops(r.spconv_ms)
        lines.append(
            f"| {r.device} | {r.cloud} | {r.case} | {r.threads} | {r.sites_in} → {r.sites_out} | {r.gmacs:.2f} | "
            f"{r.torch_ms:.1f} | {_number(r.spconv_ms)} | {_number(r.ratio, 2)} | {_number(r.torch_map_ms)} | "
            f"{_number(r.spconv_map_ms)} | "
            f"{torch_gflops:.0f} ({100 * torch_gflops / r.peak_gflops:.0f}% / "
            f"{100 * torch_gflops / r.peak_bf16_gflops:.0f}%) | "
            f"{_number(spconv_gflops, 0)} ({_number(100 * spconv_gflops / r.peak_gflops, 0, '%')}) | "
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

        for count in thread_counts(threads):
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
