"""Benchmarks, printed as markdown tables with the machine they ran on.

    python tools/benchmark.py voxelize [--real-data ../shared/data/real] [--repeats 7] [--threads 1 2]
    python tools/benchmark.py conv [--real-data ../shared/data/real] [--repeats 5] [--threads 1 2]
        [--conv-gemm mm|onednn] [--cases NAME ...] [--device cpu|cuda]
    python tools/benchmark.py meter [--real-data ../shared/data/real] [--repeats 5] [--threads 2]
    python tools/benchmark.py detector [--real-data ../shared/data/real] [--repeats 5] [--threads 1 2]
        [--backends torch spconv] [--precisions fp32 bf16] [--device cpu|cuda]
    python tools/benchmark.py train --database work/synthetic [--config configs/centerpoint_nuscenes_voxel01.yaml]
        [--steps 6] [--workers 0 2] [--backends torch spconv]

On a CUDA device (--device cuda; training takes the GPU whenever torch sees one) every timing waits
for the device's queued kernels; a backend not installed there has no column.
"""
import argparse
import os
import sys

import torch
from command_line import add_debug_option, run_tool

from backbones import sparse_conv_function
from backbones.backends import BACKENDS
from backbones.sparse_conv_function import CONV_GEMMS
from benchmarks.detector import benchmark_detector, benchmark_training, detector_table, training_table
from benchmarks.sparse_conv import benchmark_conv, benchmark_meter, conv_table, meter_table
from benchmarks.voxelizer import benchmark_voxelize, machine_description, voxelize_table
from detectors.centerpoint import INFERENCE_PRECISIONS
from detectors.training import training_device
from voxelize.allocator import keep_freed_memory

REAL_CLOUDS = {  # benchmark -> [(path under the real-data folder, voxel preset)]
    "voxelize": [("nuscenes/sweeps10_float16_N5.bin", "nuscenes"), ("kitti/velodyne/000000.bin", "kitti"),
                 ("kitti/velodyne/000001.bin", "kitti")],
    "conv": [("nuscenes/sweeps10_float16_N5.bin", "nuscenes"), ("kitti/velodyne/000000.bin", "kitti")],
    "meter": [("nuscenes/sweeps10_float16_N5.bin", "nuscenes"), ("kitti/velodyne/000000.bin", "kitti")],
}
DETECTOR_CASES = [  # (case, config, cloud under the real-data folder)
    ("nuScenes 10-sweep stack", "configs/centerpoint_nuscenes_voxel01.yaml", "nuscenes/sweeps10_float16_N5.bin"),
    ("KITTI scan", "configs/centerpoint_kitti_voxel005.yaml", "kitti/velodyne/000000.bin"),
]
RUNS = {"voxelize": (benchmark_voxelize, voxelize_table), "conv": (benchmark_conv, conv_table),
        "meter": (benchmark_meter, meter_table)}


def training_layout(parser, text: str) -> tuple[int, str | None]:
    """'N' or 'N:global' / 'N:per_process' → (N, BatchNorm kind; None: the config's)."""
    count, _, batch_norm = text.partition(":")
    if not count.isdigit() or int(count) < 1 or batch_norm not in ("", "global", "per_process"):
        parser.error(f"--processes {text}: expected N or N:global or N:per_process with N >= 1")
    return int(count), batch_norm or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    helps = {"voxelize": "our Voxelizer vs spconv PointToVoxel on the real scans",
             "conv": "torch backend vs spconv backend: three layers and VoxelResBackBone8x on the real scans",
             "meter": "VoxelResBackBone8x with and without the densification meter, both backends"}
    for name, default_repeats in (("voxelize", 7), ("conv", 5), ("meter", 5)):
        command = sub.add_parser(name, help=helps[name])
        command.add_argument("--real-data", default="../shared/data/real",
                             help="folder of the real scans (default: %(default)s, relative to the current directory)")
        command.add_argument("--repeats", type=int, default=default_repeats,
                             help="timed runs per side (median reported)")
        command.add_argument("--threads", type=int, nargs="+", default=[2] if name == "meter" else [1, 2],
                             help="torch thread counts to time")
    detector = sub.add_parser("detector", help="CenterPoint.predict per stage on the nuScenes stack and a KITTI scan")
    detector.add_argument("--real-data", default="../shared/data/real",
                          help="folder of the real scans (default: %(default)s, relative to the current directory)")
    detector.add_argument("--repeats", type=int, default=5, help="timed runs per side (median reported)")
    detector.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    detector.add_argument("--backends", nargs="+", choices=list(BACKENDS), help="default: every installed one")
    detector.add_argument("--precisions", nargs="+", default=["fp32"], choices=sorted(INFERENCE_PRECISIONS),
                          help="model.inference_precision values to time (bf16: autocast, opt-in)")
    for name in ("conv", "detector"):
        sub.choices[name].add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                                       help="where the model and the scan live (default: %(default)s)")
    sub.choices["conv"].add_argument("--conv-gemm", choices=CONV_GEMMS, default=sparse_conv_function.CONV_GEMM,
                                     help="GEMM of the torch backend's conv loop (default: %(default)s)")
    sub.choices["conv"].add_argument("--cases", nargs="+", help="only these cases, by their table name, e.g. "
                                     "'VoxelResBackBone8x (eval)' (default: all)")
    training = sub.add_parser("train", help="training step time vs data-loading time on a synthetic database")
    training.add_argument("--database", required=True, help="a synthetic nuScenes database (tools/make_synthetic.py)")
    training.add_argument("--config", default="configs/centerpoint_nuscenes_voxel01.yaml")
    training.add_argument("--steps", type=int, default=6, help="timed steps per run (one warm-up step more)")
    training.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    training.add_argument("--backends", nargs="+", choices=list(BACKENDS), help="default: every installed one")
    training.add_argument("--processes", nargs="+", metavar="N[:BATCHNORM]",
                          help="training process layouts, e.g. 1 2:per_process 2:global (the config's global batch "
                               "split evenly; BatchNorm by default the config's); default: the config's own")
    training.add_argument("--rounds", type=int, default=1, help="run every layout this many times, interleaved")
    for command in sub.choices.values():
        command.add_argument("--default-malloc", action="store_true",
                             help="leave glibc's malloc thresholds alone (default: keep freed large buffers, "
                                  "for both backends alike; see voxelize/allocator.py)")
    add_debug_option(parser)
    args = parser.parse_args()
    if getattr(args, "conv_gemm", "mm") == "onednn" and args.device == "cuda":
        parser.error("--conv-gemm onednn is oneDNN's CPU GEMM; on --device cuda the conv loop's GEMM is cuBLAS's "
                     "(leave --conv-gemm at mm)")
    if getattr(args, "device", "cpu") == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if not args.default_malloc:
        keep_freed_memory()

    if args.benchmark == "train":
        layouts = None if args.processes is None else [training_layout(parser, text) for text in args.processes]
        if args.rounds < 1:
            parser.error(f"--rounds must be at least 1, got {args.rounds}")
        if not os.path.isdir(args.database):
            parser.error(f"--database {args.database}: no such folder (make one with tools/make_synthetic.py)")
        synthetic = [f"dataset.root={args.database}", "dataset.version=v1.0-synthetic",
                     "dataset.train_split=synthetic_train", "dataset.val_split=synthetic_val"]
        print(f"machine: {machine_description()}\n")
        print(f"training on: {training_device()}\n")
        print(training_table(benchmark_training(args.config, synthetic, args.backends, args.workers, args.steps,
                                                layouts=layouts, rounds=args.rounds)))
        return 0

    if args.benchmark == "detector":
        cases = [(name, config, os.path.join(args.real_data, rel)) for name, config, rel in DETECTOR_CASES]
        missing = [path for _, _, path in cases if not os.path.isfile(path)]
        if missing:
            parser.error(f"real scans not found: {', '.join(missing)} (set --real-data)")
        print(f"machine: {machine_description()}\n")
        print(detector_table(benchmark_detector(cases, args.threads, args.repeats, args.backends, args.precisions,
                                                device=args.device)))
        return 0

    if args.benchmark == "conv":
        sparse_conv_function.CONV_GEMM = args.conv_gemm
        print(f"torch backend conv GEMM: {args.conv_gemm}")
    clouds = [(os.path.join(args.real_data, rel), preset) for rel, preset in REAL_CLOUDS[args.benchmark]]
    missing = [path for path, _ in clouds if not os.path.isfile(path)]
    if missing:
        parser.error(f"real scans not found: {', '.join(missing)} (set --real-data)")
    run, table = RUNS[args.benchmark]
    options = {"cases": args.cases, "device": args.device} if args.benchmark == "conv" else {}
    print(f"machine: {machine_description()}\n")
    try:
        results = run(clouds, threads=args.threads, repeats=args.repeats, **options)
    except ValueError as error:  # e.g. an unknown --cases name
        parser.error(str(error))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
