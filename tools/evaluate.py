"""Evaluate a CenterPoint checkpoint with the evaluator of the config's dataset type.

    python tools/evaluate.py CONFIG CHECKPOINT [a.b=value ...] --out DIR [--split NAME] [--overwrite]

dataset.type nuscenes: writes DIR/results_nusc.json (global frame) and the devkit's
metrics_summary.json, and prints mAP, NDS and the per-class AP.
dataset.type kitti: writes DIR/metrics_kitti.json and prints 2D, BEV and 3D AP and AOS at R40 and R11 per
class and difficulty, with the official score-threshold sampling.
dataset.type custom: writes DIR/metrics_custom.json and prints BEV / 3D / centre-distance AP per class.
A DIR that holds an earlier evaluation is refused unless --overwrite.
"""
import argparse
import sys

from command_line import add_debug_option, run_tool

from datasets.dataset_types import format_metrics
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", help="default: dataset.val_split of the config")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --out")
    add_debug_option(parser)
    args = parser.parse_intermixed_args()  # a.b=value after the options too, as the README writes them
    config = load_centerpoint_config(args.config, args.overrides)
    metrics = evaluate(config, args.checkpoint, args.out, args.split, overwrite=args.overwrite)
    print(format_metrics(config.dataset, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
