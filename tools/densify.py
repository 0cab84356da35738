"""How SSC and regular sparse convolution densify: the SSC backbone and its all-regular counterpart
(same weights) on point files, layer by layer.

    python tools/densify.py SCAN [SCAN ...] [--preset nuscenes|kitti] [--voxel-size VX VY VZ]
        [--range X0 Y0 Z0 X1 Y1 Z1] [--backbone VoxelResBackBone8x] [--backend torch|spconv]
        [--weights random|CHECKPOINT] [--seed 0] [--prune-topk K] [--json F] [--csv F] [--plot F.png]

The scans are voxelized into one batch (per-sample numbers are in the JSON). The table goes to
stdout; --csv writes one file per variant (NAME.VARIANT.csv).
"""
import argparse
import json
import os
import re
import sys

from command_line import add_debug_option, run_tool

from backbones.backends import BACKENDS
from backbones.densification_meter import compare_conv_types, plot_format, plot_reports
from backbones.voxel_backbones import BACKBONES, backbone_weights
from datasets import read_points
from datasets.atomic_files import write_atomically, write_json_atomically
from detectors.checkpoints import load_checkpoint
from voxelize.presets import VOXEL_PRESETS
from voxelize.voxelizer import Voxelizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scans", nargs="+", help="point files (KITTI .bin, nuScenes .pcd.bin, float16 stacks, .npy)")
    parser.add_argument("--preset", choices=sorted(VOXEL_PRESETS), default="nuscenes",
                        help="voxel geometry and limits (default: %(default)s)")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("VX", "VY", "VZ"))
    parser.add_argument("--range", type=float, nargs=6, metavar=("X0", "Y0", "Z0", "X1", "Y1", "Z1"))
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="VoxelResBackBone8x")
    parser.add_argument("--backend", choices=list(BACKENDS), default="torch")
    parser.add_argument("--weights", default="random", help="'random' (seeded) or a checkpoint path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prune-topk", type=float, help="add the regular variant pruned to K sites per sample "
                                                          "after each regular layer (a whole number K >= 1, or a "
                                                          "fraction of the sites if 0 < K < 1)")
    parser.add_argument("--json", help="write all reports as JSON")
    parser.add_argument("--csv", help="write each report as CSV (the variant is added to the name)")
    parser.add_argument("--plot", help="write a plot (.png, .jpg, .svg, .pdf): active sites (log) and GMAC per layer")
    add_debug_option(parser)
    args = parser.parse_args()

    if args.plot:
        plot_format(args.plot)  # refused before the work, not after it
    geometry = dict(VOXEL_PRESETS[args.preset])
    if args.voxel_size:
        geometry["voxel_size"] = args.voxel_size
    if args.range:
        geometry["point_cloud_range"] = args.range
    tensor, dropped = Voxelizer(**geometry).batch([read_points(path) for path in args.scans])
    for path, counts in zip(args.scans, dropped):
        print(f"{path}: dropped {counts}", file=sys.stderr)
    state = None if args.weights == "random" else backbone_weights(load_checkpoint(args.weights))
    reports = compare_conv_types(args.backbone, tensor, backend=args.backend, state_dict=state, seed=args.seed,
                                 prune_topk=args.prune_topk)
    for report in reports:
        print(report.table() + "\n")
    if args.json:
        write_json_atomically(args.json, {"scans": args.scans, "geometry": geometry, "backbone": args.backbone,
                                          "backend": args.backend, "weights": args.weights,
                                          "reports": [json.loads(r.to_json()) for r in reports]})
    if args.csv:
        stem, extension = os.path.splitext(args.csv)
        for report in reports:
            variant = re.sub(r"[^0-9A-Za-z]+", "_", report.label).strip("_")
            write_atomically(f"{stem}.{variant}{extension or '.csv'}", report.to_csv().encode())
    if args.plot:
        plot_reports(reports, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
