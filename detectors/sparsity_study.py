"""What densification and activation sparsity buy: CenterPoint variants trained alike, scored with
the official nuScenes metric, and metered on the validation frames with their trained weights.

    records = run_study(CONFIG, out_dir="work/study", variants=["ssc", "regular"], epochs=2, seeds=[0])

Every variant is the same config plus the overrides of one entry of :data:`VARIANTS` (and of the
geometry, :data:`GEOMETRIES`), trained on the same data with the same epochs and seed
(:func:`detectors.training.train`), evaluated by :func:`detectors.evaluation.evaluate`, then metered
(:mod:`backbones.densification_meter`) on the validation frames, trained and at its initial weights.

Each finished variant writes ``variants/NAME.seedS.json`` at once; a rerun skips a variant whose
file holds the same key — a hash of the variant's fully resolved config, its seed (part of the
config), the meter settings and the content of the dataset folder — and reruns one whose config or
data changed, saying so. The key holds the data's content, not its file times, so that a study
committed half-way continues on a fresh clone whose regenerated world is byte-identical. Training runs in a
fresh process per variant (``runs/NAME.seedS.KEY/``, resumed from its checkpoint if interrupted),
so that its peak memory is its own: ``peak_rss_mib`` is that process's peak resident set (``VmHWM`` of
``/proc/self/status``) minus its resident set just before training began. Not ``getrusage``'s
``ru_maxrss``: Linux keeps that across ``execve``, so a spawned process would inherit the study
process's peak. The training split's info cache and the GT database are built before any variant
trains, so that no variant's peak includes that one-time work.

After each variant, the study files are rewritten from every finished variant: ``study.json``,
``study.csv`` (one row per variant and seed), ``study_layers.csv`` (per layer, trained and at
initialisation), ``study.md`` (the same as Markdown tables) and the plots ``accuracy_vs_gmac.png``,
``training_cost.png``, ``layer_sparsity.png``.
"""
from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import io
import json
import multiprocessing
import os
import statistics
import time

from atomic_files import write_atomically, write_json_atomically
from backbones.densification_meter import DensificationReport, measure
from datasets.dataset_types import build_dataset
from datasets.derived_files import folder_content_digest
from datasets.gt_sampling import ensure_gt_database
from detectors.centerpoint import CenterPoint
from detectors.config import to_dict
from detectors.evaluation import evaluate
from detectors.experiment import CenterPointConfig, load_centerpoint_config
from detectors.inference import load_detector
from detectors.run_folder import CHECKPOINT
from detectors.training import seed_everything, train
from machine_info import cpu_name
from optional_dependencies import require

STUDY_VERSION = 2  # part of every variant's key: bump when what a variant's record means changes

# Each variant: the config overrides that make it from the study's config (the published SSC network).
VARIANTS: dict[str, tuple[str, ...]] = {
    "ssc": (),
    "regular": ("model.backbone_3d.conv_type=regular",),
    "regular_top50": ("model.backbone_3d.conv_type=regular", "model.backbone_3d.site_pruning={fraction: 0.5}"),
    "regular_top25": ("model.backbone_3d.conv_type=regular", "model.backbone_3d.site_pruning={fraction: 0.25}"),
    "ssc_kwta4": ("model.backbone_3d.activation_topk=4",),
    "ssc_kwta2": ("model.backbone_3d.activation_topk=2",),
    "ssc_hoyer": ("model.backbone_3d.activation_penalty={type: hoyer_square, weight: 1.0}",),
    "ssc_l1": ("model.backbone_3d.activation_penalty={type: l1, weight: 1.0}",),
}
DEFAULT_VARIANTS = ("ssc", "regular", "regular_top50", "regular_top25", "ssc_kwta4", "ssc_kwta2", "ssc_hoyer")

# demo: the config's own geometry. reduced: x and y voxels twice as large (4x fewer columns, so the
# all-regular network's densified layers hold about 4x fewer sites), same range and height — the
# evaluation still sees every object out to the metric's class ranges — and the BEV network's
# upsampling doubled, so that the head's cells stay the demo's (at 3.2 m cells the SSC baseline
# localised cars to 1.4 m and scored car AP 0.16 after 5 epochs).
GEOMETRIES = ("demo", "reduced")

# Written into a variant's run folder when its training ends: a study stopped after that reuses it.
TRAINING_MEASURES = "study_training.json"

MEMORY_MEASURE = "peak resident set (VmHWM) of a fresh training process minus its resident set when training began"


def geometry_overrides(config: CenterPointConfig, geometry: str) -> list[str]:
    """The overrides that put ``config`` on ``geometry`` (see :data:`GEOMETRIES`)."""
    if geometry == "demo":
        return []
    if geometry == "reduced":
        vx, vy, vz = config.model.geometry.voxel_size
        upsample = [2 * stride for stride in config.model.bev.upsample_strides]
        return [f"model.geometry.voxel_size=[{2 * vx!r}, {2 * vy!r}, {vz!r}]", f"model.bev.upsample_strides={upsample}"]
    raise ValueError(f"geometry must be one of {list(GEOMETRIES)}, got {geometry!r}")


def variant_config(config_path: str, overrides, variant: str, seed: int, epochs: int | None = None,
                   geometry: str = "demo") -> CenterPointConfig:
    """The fully resolved config of one variant: the study's config and overrides, the geometry's, the
    variant's, the seed and (if given) the epochs. Trained in one process, with the config's global batch
    (processes x batch_size): the study's peak memory is that process's."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown study variant {variant!r}; valid: {sorted(VARIANTS)}")
    base = load_centerpoint_config(config_path, list(overrides))
    extra = [*geometry_overrides(base, geometry), *VARIANTS[variant], f"train.seed={seed}", "train.processes=1",
             f"train.batch_size={base.train.processes * base.train.batch_size}"]
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    return load_centerpoint_config(config_path, [*overrides, *extra])


def variant_key(config: CenterPointConfig, variant: str, meter_frames: int | None, data: dict | None = None) -> str:
    """sha256 of everything a variant's record depends on; ``data``: the dataset folder's
    :func:`~datasets.derived_files.folder_content_digest`."""
    payload = {"study_version": STUDY_VERSION, "variant": variant, "config": to_dict(config),
               "meter_frames": meter_frames, "data": data}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def parse_variant(spec: str, default_seeds) -> tuple[str, list[int]]:
    """``NAME`` (the default seeds) or ``NAME@S,S,...`` (its own seeds) → (name, seeds)."""
    name, _, seeds = spec.partition("@")
    if name not in VARIANTS:
        raise ValueError(f"unknown study variant {name!r}; valid: {sorted(VARIANTS)}")
    if not seeds:
        return name, list(default_seeds)
    try:
        parsed = [int(seed) for seed in seeds.split(",")]
    except ValueError:
        raise ValueError(f"study variant {spec!r}: seeds after '@' must be integers separated by commas") from None
    if any(seed < 0 for seed in parsed) or len(set(parsed)) != len(parsed):
        raise ValueError(f"study variant {spec!r}: seeds must be distinct and non-negative")
    return name, parsed


def machine() -> dict:
    """The CPU, its logical cores, torch's threads and version: the context of a record's timings."""
    import torch

    return {"cpu": cpu_name(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def record_path(out_dir: str, variant: str, seed: int) -> str:
    return os.path.join(out_dir, "variants", f"{variant}.seed{seed}.json")


def finished_record(path: str, key: str) -> dict | None:
    """The record at ``path`` if it was made with ``key``, else None."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return record if record.get("key") == key else None


def run_study(config_path: str, out_dir: str, variants=DEFAULT_VARIANTS, overrides=(), epochs: int | None = None,
              seeds=(0,), geometry: str = "demo", meter_frames: int | None = None, progress: bool = True,
              log=print) -> list[dict]:
    """Train, evaluate and meter each variant for each seed (skipping finished ones); write the study
    files after each. ``variants``: names, or ``NAME@S,S`` for a variant with its own seeds (else
    ``seeds``). ``meter_frames``: meter the first N validation frames (None: all). Returns the records
    in the order of variants, then seeds."""
    plan, data = [], {}
    for spec in variants:
        variant, variant_seeds = parse_variant(spec, seeds)
        for seed in variant_seeds:
            config = variant_config(config_path, overrides, variant, seed, epochs, geometry)
            root = config.dataset.root
            if root not in data:
                sampling = config.train.gt_sampling  # built from the data, maybe inside its folder
                data[root] = folder_content_digest(root, exclude=[sampling.database] if sampling else [])
            plan.append((variant, seed, config, variant_key(config, variant, meter_frames, data[root])))
    records = []
    prepared = set()
    for variant, seed, config, key in plan:
        path = record_path(out_dir, variant, seed)
        record = finished_record(path, key)
        if record is not None:
            log(f"{variant} seed {seed}: finished before, skipped ({path})")
        else:
            if os.path.isfile(path):
                log(f"{variant} seed {seed}: its config or the study settings changed since {path}; running it again")
            log(f"{variant} seed {seed}: training")
            prepare_training_data(config, prepared)
            record = run_variant(variant, config, key, out_dir, geometry, meter_frames, progress)
            record["data"] = data[config.dataset.root]
            write_json_atomically(path, record)
        records.append(record)
        write_study(out_dir, records)
    return records


def run_variant(variant: str, config: CenterPointConfig, key: str, out_dir: str, geometry: str,
                meter_frames: int | None, progress: bool) -> dict:
    """Train (in a fresh process), evaluate and meter one variant; its record."""
    seed = config.train.seed
    run_dir = os.path.join(out_dir, "runs", f"{variant}.seed{seed}.{key[:12]}")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        trained = pool.submit(train_and_measure_memory, config, run_dir, progress, os.getpid()).result()
    # overwrite: an evaluation interrupted before its record was written is redone
    metrics = evaluate(config, trained["checkpoint"], os.path.join(run_dir, "eval"), overwrite=True)
    per_class = metrics["mean_dist_aps"]
    frames = validation_frames(config, meter_frames)
    trained_meter = meter_frames_of(load_detector(trained["checkpoint"], config), frames)
    seed_everything(seed)  # the initial weights train() started from
    init_meter = meter_frames_of(CenterPoint(config.model).eval(), frames)
    step_time, data_time = step_times(os.path.join(run_dir, "log.jsonl"))
    return {
        "variant": variant, "seed": seed, "key": key, "overrides": list(VARIANTS[variant]), "geometry": geometry,
        "point_cloud_range": config.model.geometry.point_cloud_range, "voxel_size": config.model.geometry.voxel_size,
        "epochs": config.train.epochs, "run_dir": run_dir, "machine": machine(),
        "metrics": {"mAP": metrics["mean_ap"], "NDS": metrics["nd_score"], "car_AP": per_class.get("car"),
                    "pedestrian_AP": per_class.get("pedestrian"), "per_class_AP": per_class},
        "training": {"steps": trained["steps"], "seconds_per_step": step_time, "data_seconds_per_step": data_time,
                     "wall_seconds": trained["wall_seconds"], "peak_rss_mib": trained["peak_rss_mib"],
                     "resumed": trained.get("resumed", False),
                     "memory_measure": MEMORY_MEASURE},
        "trained": trained_meter, "init": init_meter,
    }


def prepare_training_data(config: CenterPointConfig, prepared: set) -> None:
    """Build the training split's info cache and the GT database (if configured and missing) here, once,
    rather than inside the first variant's training process."""
    dataset, sampling = config.dataset, config.train.gt_sampling
    signature = (dataset.root, dataset.version, dataset.train_split, dataset.num_sweeps,
                 None if sampling is None else sampling.database)
    if signature in prepared:
        return
    frames = build_dataset(dataset, dataset.train_split, config.model.head.class_names)
    if sampling is not None:
        ensure_gt_database(frames, sampling.database, sampling.min_points)
    prepared.add(signature)


def train_and_measure_memory(config: CenterPointConfig, run_dir: str, progress: bool, parent: int) -> dict:
    """:func:`detectors.training.train` (resuming a checkpoint in ``run_dir``) with its wall time and peak
    memory; meant for a fresh process (see the module docstring), whose ``parent`` is the study's."""
    stop_with_parent(parent)
    measures_path = os.path.join(run_dir, TRAINING_MEASURES)
    if os.path.isfile(measures_path) and os.path.isfile(os.path.join(run_dir, CHECKPOINT)):
        # Trained before; the study stopped later (evaluating or metering): training is not redone. The
        # checkpoint is this run folder's, wherever the study folder has moved since.
        with open(measures_path) as f:
            return {**json.load(f), "checkpoint": os.path.join(run_dir, CHECKPOINT)}
    before = memory_status("VmRSS")
    started = time.perf_counter()
    # An earlier, interrupted study left this variant's run: continue it; one stopped before its first
    # checkpoint starts over (the old folder is moved aside, not deleted).
    resume = os.path.isfile(os.path.join(run_dir, CHECKPOINT))
    result = train(config, run_dir, resume=resume, overwrite=not resume and os.path.isdir(run_dir),
                   progress=progress)
    wall = time.perf_counter() - started
    measures = {"steps": result["steps"], "checkpoint": result["checkpoint"], "wall_seconds": wall,
                "peak_rss_mib": (memory_status("VmHWM") - before) / 2 ** 20, "resumed": resume}
    write_json_atomically(measures_path, measures)
    return measures


def stop_with_parent(parent: int) -> None:
    """Have Linux send this process SIGTERM when its parent (pid ``parent``) dies: a study stopped by a
    signal to its own process only (``kill PID``) must not leave its training process running on,
    unseen, taking the cores of whatever runs next. Elsewhere a no-op (Ctrl-C still reaches both)."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request: nobody is left to wait for this training
        os.kill(os.getpid(), signal.SIGTERM)


def memory_status(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS: resident set now; VmHWM: its peak), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                value, unit = line.split()[1:3]
                if unit != "kB":
                    raise ValueError(f"/proc/self/status: {field} in {unit!r}, expected kB")
                return int(value) * 1024
    raise ValueError(f"/proc/self/status has no {field} (peak memory needs Linux)")


def step_times(log_path: str) -> tuple[float | None, float | None]:
    """Mean (step seconds, data-wait seconds) per step over a training log: each record averages the
    steps since the previous one, so records are weighted by those steps."""
    if not os.path.isfile(log_path):
        return None, None
    totals, steps, previous = [0.0, 0.0], 0, 0
    with open(log_path) as f:
        for line in f:
            entry = json.loads(line)
            if "step_time" not in entry:
                continue
            window = entry["step"] - previous if entry["step"] > previous else 1  # a resumed run restarts
            totals[0] += entry["step_time"] * window
            totals[1] += entry["data_time"] * window
            steps += window
            previous = entry["step"]
    return (totals[0] / steps, totals[1] / steps) if steps else (None, None)


def validation_frames(config: CenterPointConfig, limit: int | None) -> list:
    """The first ``limit`` (all when None) validation clouds of the config's dataset."""
    dataset = config.dataset
    frames = build_dataset(dataset, dataset.val_split, config.model.head.class_names)
    count = len(frames) if limit is None else min(limit, len(frames))
    if count == 0:
        raise ValueError(f"{dataset.root}: split {dataset.val_split!r} has no frames to meter")
    return [frames[index]["points"] for index in range(count)]


def meter_frames_of(model: CenterPoint, clouds: list) -> dict:
    """The densification meter on the model's 3D backbone, one frame at a time, summarised."""
    reports = []
    for cloud in clouds:
        tensor, _ = model.voxelizers["test"].batch([cloud])
        reports.append(measure(model.backbone_3d, tensor))
    return summarise_reports(reports)


def summarise_reports(reports: list[DensificationReport]) -> dict:
    """Per-frame means of the meter's numbers over ``reports`` (one per frame, the same model)."""
    names = [layer.name for layer in reports[0].layers]
    for report in reports[1:]:
        if [layer.name for layer in report.layers] != names:
            raise ValueError("reports of different models cannot be summarised together")

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    layers = []
    for index, name in enumerate(names):
        records = [report.layers[index] for report in reports]
        fractions = [r.channel_zero_fraction for r in records if r.channel_zero_fraction is not None]
        channel_zero = [statistics.fmean(column) for column in zip(*fractions)] if fractions else None
        layers.append({
            "name": name, "kind": records[0].kind, "channels_out": records[0].channels_out,
            "sites_out": mean([r.sites_out for r in records]), "gmac": mean([r.macs / 1e9 for r in records]),
            "skippable_gmac": mean([r.skippable_macs / 1e9 for r in records]),
            "zero_input_gmac": mean([r.zero_input_macs / 1e9 for r in records]),
            "active_ratio": mean([r.active_ratio for r in records]), "hoyer": mean([r.hoyer for r in records]),
            "channel_zero_fraction": channel_zero,
            "dead_channels": None if channel_zero is None else sum(f == 1.0 for f in channel_zero)})
    return {"frames": len(reports), "gmac_per_frame": mean([r.total_macs / 1e9 for r in reports]),
            "skippable_gmac_per_frame": mean([r.total_skippable_macs / 1e9 for r in reports]),
            "zero_input_gmac_per_frame": mean([r.total_zero_input_macs / 1e9 for r in reports]),
            "layers": layers}


SUMMARY_COLUMNS = ["variant", "seed", "geometry", "epochs", "mAP", "NDS", "car_AP", "pedestrian_AP", "gmac_per_frame",
                   "skippable_gmac_per_frame", "zero_input_gmac_per_frame", "init_gmac_per_frame",
                   "seconds_per_step", "peak_rss_mib", "mean_active_ratio", "mean_hoyer"]
LAYER_COLUMNS = ["variant", "seed", "weights", "layer", "kind", "channels_out", "sites_out", "gmac", "skippable_gmac",
                 "zero_input_gmac", "active_ratio", "hoyer", "dead_channels"]


def summary_row(record: dict) -> dict:
    trained = record["trained"]
    ratios = [layer["active_ratio"] for layer in trained["layers"] if layer["active_ratio"] is not None]
    hoyers = [layer["hoyer"] for layer in trained["layers"] if layer["hoyer"] is not None]
    return {"variant": record["variant"], "seed": record["seed"], "geometry": record["geometry"],
            "epochs": record["epochs"], **{k: record["metrics"][k] for k in ("mAP", "NDS", "car_AP", "pedestrian_AP")},
            "gmac_per_frame": trained["gmac_per_frame"],
            "skippable_gmac_per_frame": trained["skippable_gmac_per_frame"],
            "zero_input_gmac_per_frame": trained["zero_input_gmac_per_frame"],
            "init_gmac_per_frame": record["init"]["gmac_per_frame"],
            "seconds_per_step": record["training"]["seconds_per_step"],
            "peak_rss_mib": record["training"]["peak_rss_mib"],
            "mean_active_ratio": statistics.fmean(ratios) if ratios else None,
            "mean_hoyer": statistics.fmean(hoyers) if hoyers else None}


def seed_spread(records: list[dict]) -> dict:
    """Per variant: the mean and the spread (max - min) over seeds of each summary number."""
    by_variant: dict[str, list[dict]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(summary_row(record))
    summary = {}
    for variant, rows in by_variant.items():
        numbers = {}
        for column in SUMMARY_COLUMNS[4:]:
            values = [row[column] for row in rows if row[column] is not None]
            if values:
                numbers[column] = {"mean": statistics.fmean(values), "spread": max(values) - min(values)}
        summary[variant] = {"seeds": [row["seed"] for row in rows], **numbers}
    return summary


def study_markdown(records: list[dict]) -> str:
    """Two Markdown tables of the finished records: one row per variant and seed (accuracy, compute,
    training cost) with a mean ± spread row for a variant of several seeds; and the active ratio per
    backbone layer, trained / at initialisation, of each variant's first seed."""
    def number(value, form=".3f"):
        return "—" if value is None else format(value, form)

    lines = ["| variant | seed | mAP | NDS | car AP | pedestrian AP | GMAC/frame | skippable GMAC | GMAC at init "
             "| s/step | peak MiB | mean active ratio | mean Hoyer |", "|" + "---|" * 13]
    spread = seed_spread(records)
    for index, record in enumerate(records):
        row = summary_row(record)
        lines.append(f"| {row['variant']} | {row['seed']} | " + " | ".join(
            number(row[column], form) for column, form in (
                ("mAP", ".3f"), ("NDS", ".3f"), ("car_AP", ".3f"), ("pedestrian_AP", ".3f"), ("gmac_per_frame", ".3f"),
                ("skippable_gmac_per_frame", ".3f"), ("init_gmac_per_frame", ".3f"), ("seconds_per_step", ".2f"),
                ("peak_rss_mib", ".0f"), ("mean_active_ratio", ".3f"), ("mean_hoyer", ".3f"))) + " |")
        last_of_variant = index + 1 == len(records) or records[index + 1]["variant"] != record["variant"]
        summary = spread[record["variant"]]
        if last_of_variant and len(summary["seeds"]) > 1:
            cells = []
            for column in ("mAP", "NDS", "car_AP", "pedestrian_AP", "gmac_per_frame"):
                entry = summary.get(column)
                cells.append("—" if entry is None else f"{entry['mean']:.3f} ± {entry['spread'] / 2:.3f}")
            lines.append(f"| {record['variant']} (mean ± half the spread) | {len(summary['seeds'])} seeds | "
                         + " | ".join(cells) + " |" + " |" * 6)
    first = {}
    for record in records:
        first.setdefault(record["variant"], record)
    names = [layer["name"] for layer in records[0]["trained"]["layers"]] if records else []
    layers = ["| layer | " + " | ".join(first) + " |", "|" + "---|" * (len(first) + 1)]
    for position, name in enumerate(names):
        cells = []
        for record in first.values():
            trained, init = (record[weights]["layers"] for weights in ("trained", "init"))
            same = position < len(trained) and trained[position]["name"] == name
            ratios = (number(layers_of[position]["active_ratio"], ".2f") for layers_of in (trained, init))
            cells.append(" / ".join(ratios) if same else "—")
        layers.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nActive ratio after each layer's activation, trained / at initialisation:\n\n" + \
        "\n".join(layers) + "\n"


def write_study(out_dir: str, records: list[dict]) -> None:
    """study.json, study.csv, study_layers.csv, study.md and the three plots, from the finished records."""
    os.makedirs(out_dir, exist_ok=True)
    write_atomically(os.path.join(out_dir, "study.md"), study_markdown(records).encode())
    write_json_atomically(os.path.join(out_dir, "study.json"), {
        "memory_measure": MEMORY_MEASURE, "summary": seed_spread(records), "variants": records})
    write_atomically(os.path.join(out_dir, "study.csv"), _csv(SUMMARY_COLUMNS, map(summary_row, records)))
    layer_rows = [{"variant": record["variant"], "seed": record["seed"], "weights": weights,
                   "layer": layer["name"], **{c: layer[c] for c in LAYER_COLUMNS[4:]}}
                  for record in records for weights in ("trained", "init") for layer in record[weights]["layers"]]
    write_atomically(os.path.join(out_dir, "study_layers.csv"), _csv(LAYER_COLUMNS, layer_rows))
    plot_accuracy_against_compute(records, os.path.join(out_dir, "accuracy_vs_gmac.png"))
    plot_training_cost(records, os.path.join(out_dir, "training_cost.png"))
    plot_layer_sparsity(records, os.path.join(out_dir, "layer_sparsity.png"))


def _csv(columns: list[str], rows) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue().encode()


def _figure(size):
    # A Figure of its own, not pyplot's: the library never switches the process's matplotlib backend.
    return require("matplotlib.figure", "plotting the sparsity study").Figure(figsize=size)


def _save(figure, path: str) -> None:
    figure.tight_layout()
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.tmp.png")
    figure.savefig(temporary, dpi=110)  # then renamed: a reader never sees half a PNG
    os.replace(temporary, path)


def _colours(records: list[dict]) -> dict[str, str]:
    variants = list(dict.fromkeys(record["variant"] for record in records))
    return {variant: f"C{index % 10}" for index, variant in enumerate(variants)}


def plot_accuracy_against_compute(records: list[dict], path: str) -> None:
    """mAP, NDS, car AP and pedestrian AP against backbone GMAC per frame: filled = done, hollow =
    done minus the multiply-adds on all-zero input rows (what a row-skipping kernel would spend)."""
    figure = _figure((11, 8))
    colours = _colours(records)
    for axis, metric in zip(figure.subplots(2, 2).flat, ("mAP", "NDS", "car_AP", "pedestrian_AP")):
        labelled = set()
        for record in records:
            done = record["trained"]["gmac_per_frame"]
            needed = done - record["trained"]["skippable_gmac_per_frame"]
            value = record["metrics"][metric]
            if value is None:
                continue
            colour = colours[record["variant"]]
            label = None if record["variant"] in labelled else record["variant"]
            labelled.add(record["variant"])
            axis.plot([needed, done], [value, value], color=colour, linewidth=0.8)
            axis.plot(done, value, "o", color=colour, label=label)
            axis.plot(needed, value, "o", markerfacecolor="none", color=colour)
        axis.set_xscale("log")
        axis.set_xlabel("3D backbone GMAC per frame")
        axis.set_ylabel(metric.replace("_", " "))
        axis.grid(True, alpha=0.3)
    figure.axes[0].legend(fontsize=8)
    figure.suptitle("filled: multiply-adds done; hollow: without those on all-zero input rows (a row-skipping kernel)",
                    fontsize=10)
    _save(figure, path)


def plot_training_cost(records: list[dict], path: str) -> None:
    """Seconds per training step and peak training memory per variant (one dot per seed)."""
    figure = _figure((10, 4))
    colours = _colours(records)
    variants = list(colours)
    for axis, (key, label) in zip(figure.subplots(1, 2), (("seconds_per_step", "seconds per training step"),
                                                          ("peak_rss_mib", "peak training memory (MiB, RSS)"))):
        for position, variant in enumerate(variants):
            values = [r["training"][key] for r in records if r["variant"] == variant and r["training"][key] is not None]
            if values:
                axis.bar(position, statistics.fmean(values), color=colours[variant], alpha=0.6)
                axis.plot([position] * len(values), values, "k.")
        axis.set_xticks(range(len(variants)), variants, rotation=45, ha="right", fontsize=8)
        axis.set_ylabel(label)
        axis.grid(True, axis="y", alpha=0.3)
    _save(figure, path)


def plot_layer_sparsity(records: list[dict], path: str) -> None:
    """Active ratio and Hoyer sparsity per backbone layer: trained (solid) and at initialisation
    (dashed), the first seed of each variant."""
    figure = _figure((11, 8))
    ratio_axis, hoyer_axis = figure.subplots(2, 1, sharex=True)
    colours = _colours(records)
    shown = set()
    for record in records:
        if record["variant"] in shown:
            continue
        shown.add(record["variant"])
        for weights, style in (("trained", "-"), ("init", "--")):
            layers = record[weights]["layers"]
            label = f"{record['variant']} ({weights})"
            positions = range(len(layers))
            ratio_axis.plot(positions, [_nan(layer["active_ratio"]) for layer in layers], style, marker=".",
                            color=colours[record["variant"]], label=label)
            hoyer_axis.plot(positions, [_nan(layer["hoyer"]) for layer in layers], style, marker=".",
                            color=colours[record["variant"]], label=label)
    names = [layer["name"] for layer in records[0]["trained"]["layers"]]
    hoyer_axis.set_xticks(range(len(names)), names, rotation=75, fontsize=7)
    ratio_axis.set_ylabel("active ratio after the activation")
    hoyer_axis.set_ylabel("Hoyer sparsity")
    for axis in (ratio_axis, hoyer_axis):
        axis.grid(True, alpha=0.3)
    ratio_axis.legend(fontsize=7, ncol=2)
    _save(figure, path)


def _nan(value):
    return float("nan") if value is None else value


def gmac_at_initialisation(config_path: str, overrides=(), variants=DEFAULT_VARIANTS, geometry: str = "demo",
                           frames: int = 1, seed: int = 0) -> dict[str, dict]:
    """Per variant, the meter's summary at the seeded initial weights on the first ``frames``
    validation frames (no training): a quick look at what each variant costs."""
    result = {}
    for variant in variants:
        config = variant_config(config_path, overrides, variant, seed, geometry=geometry)
        seed_everything(seed)
        result[variant] = meter_frames_of(CenterPoint(config.model).eval(), validation_frames(config, frames))
    return result
