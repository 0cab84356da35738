"""The sparsity study end to end on a tiny synthetic database: two variants, one epoch; the study
files are written, a finished variant is skipped on a rerun, a changed config is not."""
import csv
import json
from pathlib import Path

import pytest

from datasets.nuscenes_writer import make_synthetic_database
from detectors import sparsity_study
from detectors.sparsity_study import (
    GEOMETRIES,
    VARIANTS,
    memory_status,
    parse_variant,
    record_path,
    run_study,
    step_times,
    variant_config,
    variant_key,
)

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")
TINY = ["dataset.num_sweeps=1", "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
        "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]",
        "model.head.shared_channels=8", "model.head.head_channels=8", "train.gt_sampling=null", "train.log_every=1",
        "train.batch_size=2", "train.processes=1"]


def test_variant_configs_and_keys(tmp_path):
    configs = {name: variant_config(CONFIG, TINY, name, seed=0, epochs=1) for name in VARIANTS}
    assert configs["regular"].model.backbone_3d.conv_type == "regular"
    assert configs["regular_top25"].model.backbone_3d.site_pruning.arguments() == {"fraction": 0.25}
    assert configs["ssc_kwta2"].model.backbone_3d.activation_topk == 2
    assert configs["ssc_hoyer"].model.backbone_3d.activation_penalty.type == "hoyer_square"
    assert all(config.train.epochs == 1 and config.train.seed == 0 for config in configs.values())
    # one training process per variant (its peak memory is the study's figure), with the config's global batch
    two_processes = variant_config(CONFIG, ["train.processes=2", "train.batch_size=3"], "ssc", seed=0)
    assert (two_processes.train.processes, two_processes.train.batch_size) == (1, 6)
    keys = {name: variant_key(config, name, None) for name, config in configs.items()}
    assert len(set(keys.values())) == len(keys)
    assert variant_key(variant_config(CONFIG, TINY, "ssc", seed=1), "ssc", None) != \
        variant_key(variant_config(CONFIG, TINY, "ssc", seed=0), "ssc", None)
    reduced = variant_config(CONFIG, TINY, "ssc", seed=0, geometry="reduced")
    assert reduced.model.geometry.voxel_size == [0.4, 0.4, 0.2] and "reduced" in GEOMETRIES
    from detectors.centerpoint import CenterPoint
    assert reduced.model.bev.upsample_strides == [2, 4]  # the head's cells stay the demo's
    def cell(config):
        grid = CenterPoint(config.model).grid
        return grid.voxel_size[0] * grid.out_size_factor

    assert cell(reduced) == pytest.approx(cell(variant_config(CONFIG, TINY, "ssc", seed=0)))
    demo = variant_config(CONFIG, TINY, "ssc", seed=0)
    assert demo.model.geometry.voxel_size == [0.2, 0.2, 0.2]
    assert variant_key(reduced, "ssc", None) != variant_key(demo, "ssc", None)
    with pytest.raises(ValueError, match="unknown study variant"):
        variant_config(CONFIG, TINY, "dense", seed=0)


def test_variant_specs_carry_their_own_seeds():
    assert parse_variant("regular", [0]) == ("regular", [0])
    assert parse_variant("ssc@0,1", [0]) == ("ssc", [0, 1])
    for bad, message in (("dense@0", "unknown study variant"), ("ssc@a", "integers"), ("ssc@1,1", "distinct"),
                         ("ssc@-1", "non-negative")):
        with pytest.raises(ValueError, match=message):
            parse_variant(bad, [0])


def test_key_changes_with_the_data_content_not_its_file_times(tmp_path):
    """A regenerated, byte-identical world keeps finished variants; any changed byte does not."""
    import os

    from datasets.derived_files import folder_content_digest

    (tmp_path / "samples").mkdir()
    cloud = tmp_path / "samples" / "a.bin"
    cloud.write_bytes(b"\x00" * 64)
    (tmp_path / ".sparsevox_infos_x.npz").write_bytes(b"cache")  # derived caches are not the data
    config = variant_config(CONFIG, TINY, "ssc", seed=0)
    first = folder_content_digest(str(tmp_path))
    assert first["files"] == 1 and first["bytes"] == 64
    os.utime(cloud, (1, 1))
    (tmp_path / ".sparsevox_infos_x.npz").write_bytes(b"another cache")
    assert folder_content_digest(str(tmp_path)) == first
    (tmp_path / "gt_database.npz").write_bytes(b"derived")  # built from the data, inside its folder
    assert folder_content_digest(str(tmp_path), exclude=[str(tmp_path / "gt_database.npz")]) == first
    assert folder_content_digest(str(tmp_path))["files"] == 2
    cloud.write_bytes(b"\x00" * 63 + b"\x01")  # same size, one byte changed
    second = folder_content_digest(str(tmp_path))
    assert second["sha256"] != first["sha256"]
    assert variant_key(config, "ssc", None, first) != variant_key(config, "ssc", None, second)
    with pytest.raises(FileNotFoundError, match="no such dataset folder"):
        folder_content_digest(str(tmp_path / "missing"))


def test_step_times_weight_each_record_by_its_steps(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(entry) for entry in [
        {"step": 1, "step_time": 4.0, "data_time": 1.0}, {"step": 4, "step_time": 2.0, "data_time": 0.0},
        {"event": "end", "steps": 4}]) + "\n")
    assert step_times(str(log)) == pytest.approx(((4.0 + 3 * 2.0) / 4, 1.0 / 4))


def test_memory_status_reads_the_resident_set_and_its_peak():
    import mmap

    before = memory_status("VmRSS")
    size = 64 * 2 ** 20
    block = mmap.mmap(-1, size)  # fresh pages, not a reused allocator pool
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1        # touched: now resident
    assert memory_status("VmRSS") - before > 32 * 2 ** 20
    assert memory_status("VmHWM") >= memory_status("VmRSS")
    block.close()
    with pytest.raises(ValueError, match="no VmNothing"):
        memory_status("VmNothing")


@pytest.mark.slow
def test_study_end_to_end_writes_its_files_and_resumes(tmp_path, monkeypatch):
    root = tmp_path / "db"
    make_synthetic_database(str(root), scenes=2, seed=3, keyframes_per_scene=3, sweeps=False)
    out = tmp_path / "study"
    overrides = [f"dataset.root={root}", *TINY]
    messages = []
    records = run_study(CONFIG, str(out), ["ssc", "ssc_kwta2@0"], overrides, epochs=1, seeds=[0], meter_frames=1,
                        progress=False, log=messages.append)
    assert [r["variant"] for r in records] == ["ssc", "ssc_kwta2"]
    assert records[0]["data"]["files"] > 0 and records[0]["machine"]["logical_cores"] >= 1
    for record in records:
        assert 0.0 <= record["metrics"]["mAP"] <= 1.0 and record["metrics"]["car_AP"] is not None
        assert record["training"]["steps"] == 2 and record["training"]["seconds_per_step"] > 0
        assert record["training"]["peak_rss_mib"] > 0
        assert record["trained"]["frames"] == record["init"]["frames"] == 1
        assert record["trained"]["gmac_per_frame"] > 0
        assert 0 <= record["trained"]["skippable_gmac_per_frame"] <= record["trained"]["gmac_per_frame"]
    # k-WTA with k = 2 leaves at most 2 non-zero channels per site after every activation
    kwta = records[1]["trained"]["layers"]
    assert all(layer["active_ratio"] <= 2 / layer["channels_out"] + 1e-9 for layer in kwta)
    assert records[1]["trained"]["zero_input_gmac_per_frame"] > records[0]["trained"]["zero_input_gmac_per_frame"]

    study = json.loads((out / "study.json").read_text())
    assert [v["variant"] for v in study["variants"]] == ["ssc", "ssc_kwta2"] and "ssc" in study["summary"]
    rows = list(csv.DictReader((out / "study.csv").open()))
    assert [row["variant"] for row in rows] == ["ssc", "ssc_kwta2"]
    assert float(rows[0]["gmac_per_frame"]) == pytest.approx(records[0]["trained"]["gmac_per_frame"])
    layer_rows = list(csv.DictReader((out / "study_layers.csv").open()))
    assert len(layer_rows) == 2 * 2 * len(kwta)
    assert "| ssc_kwta2 | 0 |" in (out / "study.md").read_text()
    for plot in ("accuracy_vs_gmac.png", "training_cost.png", "layer_sparsity.png"):
        assert (out / plot).read_bytes()[:4] == b"\x89PNG", plot
    finished = Path(record_path(str(out), "ssc", 0))
    assert finished.is_file()

    # Stopped after training, before its record was written: the rerun evaluates and meters again
    # without training again, and the record carries the first training's measures.
    finished.unlink()
    log_file = Path(records[0]["run_dir"]) / "log.jsonl"
    log_before = log_file.read_bytes()
    recovered = run_study(CONFIG, str(out), ["ssc"], overrides, epochs=1, seeds=[0], meter_frames=1, progress=False,
                          log=messages.append)[0]
    assert log_file.read_bytes() == log_before
    assert recovered["training"] == records[0]["training"] and recovered["metrics"] == records[0]["metrics"]
    assert finished.is_file()

    # Rerun: both variants are finished with the same configs, so nothing trains again.
    def no_training(*args, **kwargs):
        raise AssertionError("a finished variant was run again")

    monkeypatch.setattr(sparsity_study, "run_variant", no_training)
    before = finished.read_bytes()
    again = run_study(CONFIG, str(out), ["ssc", "ssc_kwta2"], overrides, epochs=1, seeds=[0], meter_frames=1,
                      progress=False, log=messages.append)
    assert again == records and finished.read_bytes() == before
    assert sum("skipped" in m for m in messages) == 2
    # A changed config is not taken for finished: the variant runs again.
    with pytest.raises(AssertionError, match="run again"):
        run_study(CONFIG, str(out), ["ssc"], [*overrides, "optimizer.lr=0.002"], epochs=1, seeds=[0],
                  meter_frames=1, progress=False, log=messages.append)
    assert "changed" in messages[-2]
    # So is changed data: one byte of one point file.
    cloud = next((root / "samples").rglob("*.bin"))
    content = bytearray(cloud.read_bytes())
    content[-1] ^= 1
    cloud.write_bytes(bytes(content))
    with pytest.raises(AssertionError, match="run again"):
        run_study(CONFIG, str(out), ["ssc"], overrides, epochs=1, seeds=[0], meter_frames=1, progress=False,
                  log=messages.append)


def fake_record(variant, seed, m_ap, gmac, ratios):
    layers = [{"name": f"conv{index}", "active_ratio": ratio, "hoyer": 0.5} for index, ratio in enumerate(ratios)]
    return {"variant": variant, "seed": seed, "geometry": "reduced", "epochs": 1,
            "metrics": {"mAP": m_ap, "NDS": m_ap / 2, "car_AP": m_ap, "pedestrian_AP": None},
            "trained": {"gmac_per_frame": gmac, "skippable_gmac_per_frame": 0.0, "zero_input_gmac_per_frame": 0.0,
                        "layers": layers},
            "init": {"gmac_per_frame": gmac, "layers": [dict(layer, active_ratio=0.5) for layer in layers]},
            "training": {"seconds_per_step": 1.0, "peak_rss_mib": 100.0}}


def test_study_markdown_tables():
    from detectors.sparsity_study import study_markdown

    text = study_markdown([fake_record("ssc", 0, 0.30, 0.5, [0.25, 0.5]), fake_record("ssc", 1, 0.20, 0.5, [0.3, 0.4]),
                           fake_record("regular", 0, 0.10, 6.0, [0.75, 0.125])])
    rows = [line for line in text.splitlines() if line.startswith("| ssc") or line.startswith("| regular")]
    assert rows[0].startswith("| ssc | 0 | 0.300 | 0.150 | 0.300 | — | 0.500 |")
    assert rows[2].startswith("| ssc (mean ± half the spread) | 2 seeds | 0.250 ± 0.050 | 0.125 ± 0.025 |")
    assert rows[3].startswith("| regular | 0 | 0.100 |")
    assert all(row.count("|") == rows[0].count("|") for row in rows[:4])
    # the layer table: each variant's first seed, trained / init
    assert "| conv0 | 0.25 / 0.50 | 0.75 / 0.50 |" in text and "| conv1 | 0.50 / 0.50 | 0.12 / 0.50 |" in text


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="parent-death signal is Linux's")
def test_the_training_process_does_not_outlive_a_killed_study(tmp_path):
    """The study trains in a child process; a study killed by a signal to its own process (no chance to
    stop the child) must not leave that training running."""
    import os
    import subprocess
    import sys
    import textwrap
    import time

    script = tmp_path / "study_process.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, time
        from detectors.sparsity_study import stop_with_parent

        def training(parent):
            stop_with_parent(parent)
            time.sleep(120)

        if __name__ == "__main__":
            child = multiprocessing.get_context("spawn").Process(target=training, args=(os.getpid(),))
            child.start()
            print(child.pid, flush=True)
            time.sleep(1)
            os._exit(0)  # gone without a word to the child, as after kill -9
    """))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    started = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    pid = int(started.stdout.split()[0])

    def running():
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False
        return "State:\tZ" not in state  # a zombie has stopped; its new parent reaps it

    deadline = time.monotonic() + 60
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = running()
    if alive:
        os.kill(pid, 9)
    assert not alive, "the training process outlived its study"
