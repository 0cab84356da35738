"""Evaluate a CenterPoint checkpoint: the official nuScenes metric, or the KITTI benchmark's AP.

    python tools/evaluate.py CONFIG CHECKPOINT [a.b=value ...] --out DIR [--split NAME]

dataset.type nuscenes: writes DIR/results_nusc.json (global frame) and the devkit's
metrics_summary.json, and prints mAP, NDS and the per-class AP.
dataset.type kitti: writes DIR/metrics_kitti.json and prints 2D, BEV and 3D AP and AOS at R40 and R11 per
class and difficulty, with the official score-threshold sampling.
"""
import argparse
import sys

from command_line import add_debug_option, run_tool

from datasets.kitti_eval import format_table
from detectors.centerpoint import load_centerpoint_config
from detectors.training import evaluate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", help="default: dataset.val_split of the config")
    add_debug_option(parser)
    args = parser.parse_args()
    config = load_centerpoint_config(args.config, args.overrides)
    metrics = evaluate(config, args.checkpoint, args.out, args.split)
    if config.dataset.type == "kitti":
        print(format_table(metrics))
        return 0
    print(f"mAP {metrics['mean_ap']:.4f}  NDS {metrics['nd_score']:.4f}")
    for name, ap in metrics["mean_dist_aps"].items():
        print(f"  {name:<22} AP {ap:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
