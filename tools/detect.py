"""Detect objects in point files with a trained CenterPoint: one JSON per file (and a PNG with --png).

    python tools/detect.py CONFIG CHECKPOINT FILE... [--out DIR] [--png] [--score-threshold X]
        [--png-min-score S] [--calibration F] [--device cpu|cuda] [--columns x,y,z,intensity,...]
        [--rescale-intensity] [--overwrite] [a.b=value ...]

FILE: KITTI .bin, nuScenes .pcd.bin, float16 stacks (*_float16_N5.bin), .npy (N, C), and, with the
reader that supports them, PCD .pcd and LAS/LAZ. Each DIR/NAME.json holds the boxes
(x, y, z, dx, dy, dz, yaw, vx, vy in the file's LiDAR frame), scores, class names, how the file's
columns became the model's features (by name: a .pcd.bin's ring column is left out, a one-sweep
file's time lag is 0), the points read and dropped, the checkpoint and config, and the time taken.
An existing output is refused unless --overwrite. A file whose intensity range (0..1, 0..255,
0..65535, from its largest value) differs from the training data's (nuScenes 0..255, KITTI 0..1) is
refused unless --rescale-intensity. --score-threshold X sets model.decode.score_threshold.
--calibration F (a score calibration fitted for this checkpoint, e.g. make demo's score_calibration.json)
turns each score into the share of detections like it that were right where it was fitted (the model's
own scores kept as raw_scores); --score-threshold and --png-min-score then apply to those.

The same in Python:
    model = CenterPoint.from_checkpoint(CHECKPOINT, CONFIG)     # or no CONFIG: the run's config.yaml
    points, _ = detectors.inference.model_points(FILE, model.point_features)
    detections = model.predict([points])[0]                       # boxes (K, 9), scores, labels
"""
import argparse
import os
import re
import sys
import time

from command_line import add_debug_option, run_tool

from atomic_files import write_json_atomically
from detectors.centerpoint import CenterPoint
from detectors.inference import calibrate_record, detection_record, output_paths
from detectors.score_calibration import load_score_calibration

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a.b=value; anything else is a point file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the model's YAML config (e.g. the run folder's config.yaml)")
    parser.add_argument("checkpoint")
    parser.add_argument("inputs", nargs="+", metavar="FILE|a.b=value", help="point files, then config overrides")
    parser.add_argument("--out", default="detections", help="output folder (default: %(default)s)")
    parser.add_argument("--png", action="store_true", help="also render DIR/NAME.png: points and boxes from above")
    parser.add_argument("--png-min-score", type=float, default=0.3,
                        help="draw the detections scoring at least this (default: %(default)s; software "
                             "rendering slows down with many or large boxes)")
    parser.add_argument("--score-threshold", type=float, help="keep detections scoring at least this")
    parser.add_argument("--calibration", help="a score calibration JSON fitted for CHECKPOINT "
                                              "(detectors/score_calibration.py)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--columns", help="comma-separated names of the files' columns, replacing the reader's")
    parser.add_argument("--rescale-intensity", action="store_true",
                        help="scale intensities to the training data's range instead of refusing a mismatch")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_debug_option(parser)
    args = parser.parse_intermixed_args()
    overrides = [item for item in args.inputs if OVERRIDE.match(item) and not os.path.exists(item)]
    files = [item for item in args.inputs if item not in overrides]
    if not files:
        parser.error("no point files given")
    for option, value in (("--score-threshold", args.score_threshold), ("--png-min-score", args.png_min_score)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{option} is a detection score in [0, 1], got {value:g}")
    if args.score_threshold is not None and not args.calibration:
        overrides.append(f"model.decode.score_threshold={args.score_threshold}")
    columns = [name.strip() for name in args.columns.split(",")] if args.columns else None
    return detect(args, files, overrides, columns)


def detect(args, files, overrides, columns) -> int:
    from tqdm import tqdm

    plans = output_paths(files, args.out, args.overwrite, (".json", ".png") if args.png else (".json",),
                         stale_suffixes=(".png",))
    model = CenterPoint.from_checkpoint(args.checkpoint, args.config, args.device, overrides)
    calibration = load_score_calibration(args.calibration, args.checkpoint, model.config) \
        if args.calibration else None
    for path, plan in tqdm(list(zip(files, plans)), unit="file", disable=len(files) < 2):
        started = time.perf_counter()
        record, points, detections = detection_record(model, path, args.checkpoint, os.path.abspath(args.config),
                                                      overrides, columns, args.rescale_intensity)
        if calibration is not None:
            record = calibrate_record(record, calibration, args.calibration, args.score_threshold)
        if args.png:
            render_detections(points, record, plan[".png"], args.png_min_score)
        record["timing_s"]["total"] = time.perf_counter() - started
        write_json_atomically(plan[".json"], record)
        tqdm.write(f"{path}: {record['num_detections']} detections in {record['timing_s']['total']:.2f} s "
                   f"-> {plan['.json']}")
    return 0


def render_detections(points, record: dict, path: str, min_score: float) -> None:
    from visualization import render_png, scene_panel

    drawn = [i for i, score in enumerate(record["scores"]) if score >= min_score]
    title = f"{os.path.basename(record['file'])}: {len(drawn)} of {record['num_detections']} detections " \
            f"(drawn: score >= {min_score:g})"
    panel = scene_panel(points, pred_boxes=[record["boxes"][i] for i in drawn],
                        pred_names=[record["labels"][i] for i in drawn],
                        pred_scores=[record["scores"][i] for i in drawn], title=title)
    render_png([panel], path, (1200, 1200))


if __name__ == "__main__":
    sys.exit(run_tool(main))
