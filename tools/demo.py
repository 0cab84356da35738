"""The main job on the built-in synthetic LiDAR world, start to finish.

    python tools/demo.py --out work/demo [--real-data ../shared/data/real] [--scenes 30]

1. generate the synthetic world as a nuScenes database (reused when already there),
2. train the small CPU CenterPoint (configs/centerpoint_synthetic_cpu.yaml; a run of the same config is
   reused or continued, one of another config refused),
3. evaluate it with the official nuScenes DetectionEval on the synthetic validation split,
4. write the densification report (SSC vs regular, same trained weights) of a validation frame,
5. render that frame headless to a PNG: points with GT and predicted boxes, and the active voxels
   of a stride-1 and a strided layer, SSC next to regular (blue: from the input, orange: added),
6. fit per-class score calibration on the validation split (OUT/score_calibration.json: a score then reads
   as the share of detections like it that were right there; detectors/score_calibration.py),
7. voxelize the real scans of ../shared/data/real when present, and score the model on the real nuScenes
   key frame (sim-to-real: recall and false positives, with raw and with calibrated scores),
and print a summary with the paths (also in OUT/summary.json).
"""
import argparse
import json
import os
import sys
import time

from command_line import add_debug_option, run_tool

from atomic_files import write_atomically, write_json_atomically
from backbones.densification_meter import compare_conv_types, plot_reports
from datasets import read_points
from datasets.dataset_types import build_dataset
from datasets.nuscenes_writer import (
    SYNTHETIC_VERSION,
    make_synthetic_database,
    require_synthetic_reader,
    require_world,
    world_settings,
)
from datasets.realism import sim_to_real
from detectors.centerpoint import CenterPoint
from detectors.checkpoints import load_checkpoint, load_model_weights
from detectors.config import to_dict
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config
from detectors.inference import detections_with_names
from detectors.run_folder import run_config_differences
from detectors.score_calibration import fit_score_calibration
from detectors.training import train
from visualization import render_png
from visualization.views import detector_panels, scene_then_layers
from voxelize.allocator import keep_freed_memory
from voxelize.presets import preset_voxelizer

CONFIG = "configs/centerpoint_synthetic_cpu.yaml"
DEMO_LAYERS = ["conv1.0.conv1", "conv2.0.0"]   # a stride-1 layer and the first strided one
DEMO_VIEW = (-25.0, -25.0, 25.0, 25.0)         # metres around the sensor: voxels stay visible
REAL_SCANS = [("kitti/velodyne/000000.bin", "kitti"), ("nuscenes/sweeps10_float16_N5.bin", "nuscenes")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--real-data", default="../shared/data/real",
                        help="folder of the real scans, relative to the current directory (default: %(default)s)")
    # 30 scenes of the parts-based world hold more annotations than the 40 of the cuboid world, at about its
    # training time (a frame has ~1.7x the voxels).
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--config", default=CONFIG)
    add_debug_option(parser)
    args = parser.parse_args()
    keep_freed_memory()  # each training step allocates the same large temporaries anew (voxelize/allocator.py)
    start = time.perf_counter()
    timings = {}

    database = os.path.join(args.out, "synthetic")
    run = os.path.join(args.out, "run")
    config = load_centerpoint_config(args.config, [f"dataset.root={database}"])
    require_synthetic_reader(config.dataset, args.config)  # before anything is generated or trained
    # the sweeps between key frames only when the model reads them: without them the world generates in a third
    # of the time
    world = world_settings(args.scenes, seed=0, sweeps=config.dataset.num_sweeps > 1)
    if os.path.isfile(os.path.join(database, SYNTHETIC_VERSION, "sample.json")):
        require_world(database, world)  # a folder of an older demo holds another world and its model
    elif os.path.exists(run):
        raise ValueError(f"{run} holds a run whose synthetic world {database} is gone; remove {args.out} "
                         f"(or the run) to start over")
    else:
        from tqdm import tqdm
        summary = make_synthetic_database(database, world["scenes"], seed=world["seed"],
                                          progress=lambda r: tqdm(r, desc="synthetic world", unit="scene"),
                                          workers=None,  # one process per core: the same database
                                          sweeps=world["sweeps"])
        print(f"synthetic world: {summary.scenes} scenes, {summary.samples} key frames, "
              f"{summary.sweeps} sweeps between them")
    timings["generate_s"] = time.perf_counter() - start

    if config.train.gt_sampling is not None:  # the GT database belongs beside the demo's data
        config.train.gt_sampling.database = os.path.join(args.out, "gt_database.npz")
    checkpoint = os.path.join(run, "checkpoint.pt")
    started = os.path.isfile(checkpoint)
    differences = run_config_differences(run, to_dict(config)) if started else ""
    if differences:  # a finished run of an older config (other epochs, sampling) would be scored as today's demo
        raise ValueError(f"{run} was trained with another config than {args.config} ({differences}); remove "
                         f"{args.out} (or the run) to start over, or choose another --out (make demo: DEMO_DIR)")
    if not started or load_checkpoint(checkpoint)["epoch"] < config.train.epochs:
        # The demo owns its run folder: a run stopped before its first checkpoint is started over (moved aside).
        train(config, run, resume=started, overwrite=not started)
    timings["train_s"] = time.perf_counter() - start - timings["generate_s"]

    metrics = evaluate(config, checkpoint, os.path.join(args.out, "eval"), overwrite=True)  # the demo's own folder
    timings["evaluate_s"] = time.perf_counter() - start - timings["generate_s"] - timings["train_s"]

    validation = build_dataset(config.dataset, config.dataset.val_split, config.model.head.class_names)
    first = validation[0]
    model = CenterPoint(config.model)
    load_model_weights(model, checkpoint)
    frame, _ = model.voxelizers["test"].batch([first["points"]])
    reports = compare_conv_types(config.model.backbone_3d.type, frame, state_dict=model.backbone_3d.state_dict(),
                                 channels=config.model.backbone_3d.channels,
                                 out_channels=config.model.backbone_3d.out_channels, prune_topk=0.25)
    densify_json = os.path.join(args.out, "densification.json")
    densify_png = os.path.join(args.out, "densification.png")
    write_json_atomically(densify_json, [json.loads(r.to_json()) for r in reports])
    plot_reports(reports, densify_png)
    write_atomically(os.path.join(args.out, "densification.txt"), "\n\n".join(r.table() for r in reports).encode())

    scene, *layers = detector_panels(config, first, checkpoint, DEMO_LAYERS, extent=DEMO_VIEW,
                                     footprint=True)
    active_voxels_png = render_png(scene_then_layers(scene, layers, 2), os.path.join(args.out, "active_voxels.png"),
                                   size=(1600, 2400), columns=2, extent=DEMO_VIEW)
    timings["densify_and_visualize_s"] = time.perf_counter() - start - sum(timings.values())

    real = []
    for relative, preset in REAL_SCANS:
        path = os.path.join(args.real_data, relative)
        if os.path.isfile(path):
            real.append(dict(scan=relative, preset=preset, **preset_voxelizer(preset)(read_points(path)).summary()))

    # scores as the share of detections like them that were right on the validation split, per class
    calibration = fit_score_calibration(lambda points: detections_with_names(model, points), validation,
                                        config.model, checkpoint,
                                        {"dataset": database, "split": config.dataset.val_split})
    calibration_json = os.path.join(args.out, "score_calibration.json")
    calibration.save(calibration_json)

    sim_real = sim_real_calibrated = None
    if os.path.isfile(os.path.join(args.real_data, "nuscenes", "keyframe_boxes.json")):
        sim_real = sim_to_real(lambda points: detections_with_names(model, points), args.real_data)
        sim_real_calibrated = sim_to_real(lambda points: detections_with_names(model, points, calibration),
                                          args.real_data)

    timings["total_s"] = time.perf_counter() - start
    per_class = metrics["mean_dist_aps"]
    summary = {"metrics": {"mAP": metrics["mean_ap"], "NDS": metrics["nd_score"], "AP": per_class},
               "densification_total_gmac": {r.label: r.total_macs / 1e9 for r in reports},
               "real_scans": real, "sim_to_real": sim_real, "sim_to_real_calibrated": sim_real_calibrated,
               "timings": timings,
               "paths": {"database": database, "run": run, "checkpoint": checkpoint,
                         "metrics": os.path.join(args.out, "eval", "metrics_summary.json"),
                         "densification": densify_json, "densification_plot": densify_png,
                         "active_voxels": active_voxels_png, "score_calibration": calibration_json}}
    write_json_atomically(os.path.join(args.out, "summary.json"), summary)
    print(f"\nmAP {metrics['mean_ap']:.3f}  NDS {metrics['nd_score']:.3f}   "
          f"AP car {per_class['car']:.3f}  pedestrian {per_class['pedestrian']:.3f}")
    print("densification (validation frame, GMAC): " +
          ", ".join(f"{r.label} {r.total_macs / 1e9:.2f}" for r in reports))
    for label, scored in (("", sim_real), (", calibrated scores", sim_real_calibrated)):
        if scored is not None:
            print(f"sim-to-real (real nuScenes key frame, objects within 50 m with >= 5 points{label}): recall "
                  f"{scored['recall']:.2f}, {scored['false_positives']} false positives at score >= 0.2")
            points = [f">= {p['score_threshold']}: {p['found']}, {p['false_positives']}" for p in scored["by_score"]]
            print(f"  by score (found / {scored['objects']}, false positives): {'; '.join(points)}")
    for item in real:
        print(f"voxelized {item['scan']}: {item['points']} points → {item['voxels']} voxels")
    print(f"done in {timings['total_s'] / 60:.1f} min; summary in {os.path.join(args.out, 'summary.json')}")
    for name, path in summary["paths"].items():
        print(f"  {name:<20} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
