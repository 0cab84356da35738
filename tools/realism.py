"""The realism report: the synthetic world's statistics next to the real nuScenes key frame and its
10-sweep stack, with the distances between them and bird's-eye plots; optionally the sim-to-real score
of a trained model on the real key frame.

    python tools/realism.py --database work/demo/synthetic --out work/realism [--before OLD_DATABASE]
        [--real-data ../shared/data/real] [--frames 8] [--checkpoint work/demo/run/checkpoint.pt]
        [--calibration work/demo/score_calibration.json]

Writes OUT/realism.md (the table), OUT/realism.json (all numbers) and OUT/bird_eye.png; with
--checkpoint also OUT/sim_to_real.json, and with --calibration (a score calibration fitted for that
checkpoint) OUT/sim_to_real_calibrated.json, the same with calibrated scores. Synthetic statistics pool the
first --frames key frames of the validation split.
"""
import argparse
import json
import os
import sys

from command_line import add_debug_option, run_tool

from atomic_files import write_json_atomically
from datasets.realism import real_keyframe, real_sweeps, realism_report, sim_to_real, synthetic_keyframes

REAL_KEY, REAL_STACK = "real key frame", "real 10 sweeps"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True, help="synthetic nuScenes database (tools/make_synthetic.py)")
    parser.add_argument("--before", help="a second database to show beside it (e.g. today's world)")
    parser.add_argument("--split", default="synthetic_val")
    parser.add_argument("--frames", type=int, default=8, help="synthetic key frames pooled per database")
    parser.add_argument("--real-data", default="../shared/data/real",
                        help="folder of the real scans, relative to the current directory (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", help="a trained CenterPoint checkpoint: also score it on the real key frame")
    parser.add_argument("--config", help="its config (default: the checkpoint's own, else its run's config.yaml)")
    parser.add_argument("--calibration", help="a score calibration fitted for the checkpoint: also score the real "
                                              "key frame with calibrated scores")
    add_debug_option(parser)
    args = parser.parse_args()
    # the model first: a checkpoint that cannot be used stops the tool before the statistics are computed
    model = calibration = None
    if args.calibration and not args.checkpoint:
        raise ValueError("--calibration scores a model: give its --checkpoint too")
    if args.checkpoint:
        from detectors.centerpoint import CenterPoint
        from detectors.inference import detections_with_names
        from detectors.score_calibration import load_score_calibration

        model = CenterPoint.from_checkpoint(args.checkpoint, args.config)
        if args.calibration:
            calibration = load_score_calibration(args.calibration, args.checkpoint, model.config)

    key, _counts = real_keyframe(args.real_data)
    sources = {}
    if args.before:
        sources["before"] = synthetic_keyframes(args.before, args.split, args.frames)
    sources["synthetic"] = synthetic_keyframes(args.database, args.split, args.frames)
    sources[REAL_KEY] = [key]
    sources[REAL_STACK] = [real_sweeps(args.real_data)]
    report = realism_report(sources, REAL_KEY, args.out)
    print(report["table"])
    print(f"bird's-eye plots: {report['bird_eye']}")

    if model is not None:
        scorings = [("sim_to_real", None)] + ([("sim_to_real_calibrated", calibration)] if calibration else [])
        for name, with_calibration in scorings:
            score = sim_to_real(lambda points: detections_with_names(model, points, with_calibration), args.real_data)
            write_json_atomically(os.path.join(args.out, f"{name}.json"), score)
            print(json.dumps(score, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
