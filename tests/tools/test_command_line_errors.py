"""Every command-line tool answers bad input with one line ``TOOL: error: ...`` and exit code 2 (not
a traceback), and shows the traceback with --debug or SPARSEVOX_DEBUG=1.

The debug tests start the tool in a fresh interpreter, as a shell does; the other cases run the tool's
script in this process (conftest.run_tool_here), sparing each the ~3 s of a fresh interpreter's imports."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_tool_here, skip_if_extra_missing

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "centerpoint_synthetic_cpu.yaml")


def run_tool(tool: str, *arguments, env=None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
    environment.pop("SPARSEVOX_DEBUG", None) if not env or "SPARSEVOX_DEBUG" not in env else None
    return subprocess.run([sys.executable, str(ROOT / "tools" / f"{tool}.py"), *map(str, arguments)], cwd=ROOT,
                          env=environment, capture_output=True, text=True, timeout=300)


def assert_one_error_line(completed: subprocess.CompletedProcess, tool: str, *fragments: str) -> str:
    skip_if_extra_missing(completed.stderr)
    assert completed.returncode == 2, (completed.returncode, completed.stderr[-3000:])
    assert "Traceback" not in completed.stderr + completed.stdout, completed.stderr[-3000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith(f"{tool}.py: error: ")]
    assert len(lines) == 1, completed.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    """A small (N, 4) cloud as .npy: enough for the tools to get past reading it."""
    path = tmp_path_factory.mktemp("scan") / "cloud.npy"
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-20, 20, (2000, 2)), rng.uniform(-2, 1, 2000), rng.uniform(0, 1, 2000)])
    np.save(path, points.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "marker"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"model": {"weight": Payload()}}, folder / "hostile.pt")
    return folder / "hostile.pt", marker


def test_train_refuses_a_run_folder_that_holds_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"a checkpoint")
    assert_one_error_line(run_tool_here("train", CONFIG, f"dataset.root={tmp_path}", "--out", run), "train",
                          "already holds a checkpoint", "--resume", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == b"a checkpoint" and sorted(os.listdir(run)) == ["checkpoint.pt"]


# (tool, arguments, fragments of the error line); {tmp}: a fresh folder, {scan}: a small .npy cloud,
# {hostile}: a checkpoint whose pickle would create {tmp}/marker, {file}: a plain file.
ONE_LINE_CASES = [
    ("train", ["{tmp}/nope.yaml", "--out", "{tmp}/run"], ["config file not found", "nope.yaml"]),
    ("train", [CONFIG, "dataset.root={tmp}", "--out", "{tmp}/run", "--resume"], ["holds no checkpoint.pt"]),
    ("train", [CONFIG, "dataset.root={tmp}", "--out", "{tmp}/run", "--max-steps", "0"],
     ["max_steps must be at least 1"]),
    ("train", [CONFIG, "dataset.root={tmp}", "train.epochs=0", "--out", "{tmp}/run"], ["train.epochs"]),
    # settings after the options, as the README writes them, reach the config
    ("train", [CONFIG, "dataset.root={tmp}", "--out", "{tmp}/run", "train.epochs=0"],
     ["train.epochs: must be >= 1, got 0"]),
    ("train", [CONFIG, "--out", "{tmp}/run", "train.augmentation=null"],
     ["half_turn averages views of the cloud that the model never saw", "set model.test_augmentation: none"]),
    ("evaluate", [CONFIG, "{tmp}/missing.pt", "--out", "{tmp}/eval", "model.test_augmentation=double_flip"],
     ["double_flip averages mirror images, but the model was trained without flips"]),
    ("evaluate", [CONFIG, "{hostile}", "dataset.root={tmp}", "--out", "{tmp}/eval"], ["refused", "never runs code"]),
    ("evaluate", [CONFIG, "{tmp}/missing.pt", "dataset.root={tmp}", "--out", "{tmp}/eval"],
     ["checkpoint not found", "missing.pt"]),
    ("evaluate", [CONFIG, "{file}", "dataset.root={tmp}", "--out", "{tmp}/eval"], ["not a PyTorch checkpoint"]),
    ("densify", ["{tmp}/nope.bin"], ["nope.bin"]),
    ("densify", ["{scan}", "--weights", "{hostile}"], ["refused"]),
    ("densify", ["{scan}", "--prune-topk", "1.5"], ["prune_topk must be a fraction in (0, 1) or a whole number"]),
    ("densify", ["{scan}", "--prune-topk", "0"], ["prune_topk must be a fraction in (0, 1) or a whole number"]),
    ("densify", ["{scan}", "--plot", "{tmp}/plot.bmp"], ["cannot tell the plot format from the name"]),
    ("visualize", ["--scan", "{tmp}/nope.bin", "--save", "{tmp}/v.png"], ["nope.bin"]),
    ("visualize", ["--scan", "{scan}", "--save", "{tmp}/v.bmp"], ["cannot tell the image format", ".jpg"]),
    ("visualize", ["--scan", "{scan}", "--view-range", "10", "10", "-10", "-10", "--save", "{tmp}/v.png"],
     ["x0 < x1 and y0 < y1", "[10.0, 10.0, -10.0, -10.0]"]),
    ("visualize", ["--scan", "{scan}", "--columns", "0", "--save", "{tmp}/v.png"], ["--columns must be at least 1"]),
    ("visualize", ["--scan", "{scan}", "--score-threshold", "30", "--save", "{tmp}/v.png"],
     ["--score-threshold is a detection score in [0, 1]"]),
    ("visualize", ["--scan", "{scan}", "--layers", "conv7", "--save", "{tmp}/v.png"], ["valid layer names"]),
    ("detect", [CONFIG, "{hostile}", "{scan}", "--out", "{tmp}/out"], ["refused", "never runs code"]),
    ("detect", [CONFIG, "{tmp}/missing.pt", "{scan}", "--out", "{tmp}/out"], ["checkpoint not found", "missing.pt"]),
    ("detect", [CONFIG, "{file}", "{tmp}/nope.bin", "--out", "{tmp}/out"], ["point file not found", "nope.bin"]),
    ("detect", [CONFIG, "{file}", "{scan}", "--score-threshold", "30", "--out", "{tmp}/out"],
     ["--score-threshold is a detection score in [0, 1]"]),
    ("make_synthetic", ["--out", "{file}", "--scenes", "1"], ["a_file"]),
    ("benchmark", ["train", "--database", "{tmp}/nodb", "--steps", "1", "--workers", "0", "--backends", "torch"],
     ["nodb"]),
    ("benchmark", ["train", "--database", "{tmp}", "--processes", "2:sync"], ["--processes 2:sync", "N:per_process"]),
    ("benchmark", ["train", "--database", "{tmp}", "--rounds", "0"], ["--rounds must be at least 1, got 0"]),
    ("make_synthetic", ["--out", "{tmp}/db", "--scenes", "1", "--workers", "0"], ["workers must be at least 1, got 0"]),
    ("demo", ["--out", "{file}"], ["a_file"]),
    ("benchmark", ["conv", "--device", "cuda", "--conv-gemm", "onednn"], ["oneDNN's CPU GEMM", "cuBLAS"]),
    *([("benchmark", ["conv", "--device", "cuda"], ["--device cuda", "no CUDA device"])]
      if not torch.cuda.is_available() else []),
]


@pytest.mark.parametrize("tool, arguments, fragments", ONE_LINE_CASES,
                         ids=[f"{tool}-{'-'.join(a for a in arguments if a.startswith('--') or '{' not in a)[:40]}"
                              for tool, arguments, _ in ONE_LINE_CASES])
def test_bad_input_gives_one_line_and_exit_code_2(tool, arguments, fragments, tmp_path, scan, hostile):
    path, marker = hostile
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder, not a checkpoint")
    filled = [a.format(tmp=tmp_path, scan=scan, hostile=path, file=a_file) for a in arguments]
    assert_one_error_line(run_tool_here(tool, *filled), tool, *fragments)
    assert not marker.exists()  # no code of the hostile checkpoint ran
    assert a_file.read_text() == "not a folder, not a checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


@pytest.mark.parametrize("switch", ["--debug", "SPARSEVOX_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, switch):
    arguments = [tmp_path / "nope.yaml", "--out", tmp_path / "run"]
    completed = run_tool("train", *arguments, "--debug") if switch == "--debug" else \
        run_tool("train", *arguments, env={"SPARSEVOX_DEBUG": "1"})
    assert completed.returncode == 1 and "Traceback" in completed.stderr and "ConfigError" in completed.stderr


def test_one_line_for_every_kind_of_input_error():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from command_line import error_line
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert error_line(ValueError("bad\n  value")) == "bad value"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/x/y.bin")) == \
        "No such file or directory: /x/y.bin"
    assert error_line(KeyError("car")) == "KeyError: car"
    assert error_line(IndexError("--index 9 is not a frame")) == "--index 9 is not a frame"
    assert error_line(FileNotFoundError("point file not found: a.bin")) == "point file not found: a.bin"
    from optional_dependencies import MissingExtraError
    assert error_line(MissingExtraError("the Open3D views needs the package 'open3d', which is not installed: "
                                        "pip install 'sparsevox[viz]'")).endswith("pip install 'sparsevox[viz]'")


def test_run_tool_turns_input_errors_into_exit_code_2_and_lets_bugs_through(capsys, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from command_line import run_tool as run_main
    finally:
        sys.path.remove(str(ROOT / "tools"))
    from optional_dependencies import MissingExtraError
    monkeypatch.delenv("SPARSEVOX_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["tool.py"])

    def failing(error):
        def main():
            raise error
        return main

    for error in (ValueError("bad"), MissingExtraError("pip install 'sparsevox[viz]'"),
                  IsADirectoryError(21, "x", "d")):
        assert run_main(failing(error)) == 2
        assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(TypeError):  # a bug keeps its traceback
        run_main(failing(TypeError("unsupported operand")))
    assert run_main(lambda: 0) == 0


def test_demo_refuses_a_folder_of_another_world(tmp_path):
    """An older demo folder (another world, or a run whose world is gone) is refused before anything is
    trained or scored, instead of reusing a model of another world."""
    from datasets.nuscenes_writer import make_synthetic_database

    make_synthetic_database(str(tmp_path / "old" / "synthetic"), scenes=1, seed=0, keyframes_per_scene=1)
    assert_one_error_line(run_tool_here("demo", "--out", tmp_path / "old", "--real-data", tmp_path), "demo",
                          "a synthetic database of other settings", "scenes 1, expected 30")
    (tmp_path / "orphan" / "run").mkdir(parents=True)
    assert_one_error_line(run_tool_here("demo", "--out", tmp_path / "orphan", "--real-data", tmp_path), "demo",
                          "holds a run whose synthetic world", "is gone")
    assert not (tmp_path / "orphan" / "synthetic").exists()


def test_demo_refuses_a_finished_run_of_another_config(tmp_path):
    """A demo folder of today's world whose run was trained with another config (here 17 epochs, not the
    config's) is refused, not scored as today's demo."""
    import json

    import yaml

    from datasets.nuscenes_writer import WORLD_FILE, world_settings
    from detectors.config import to_dict
    from detectors.experiment import load_centerpoint_config

    out = tmp_path / "demo"
    tables = out / "synthetic" / "v1.0-synthetic"
    tables.mkdir(parents=True)
    (tables / "sample.json").write_text("[]")
    config = load_centerpoint_config("configs/centerpoint_synthetic_cpu.yaml", [f"dataset.root={out / 'synthetic'}"])
    (tables / WORLD_FILE).write_text(json.dumps(world_settings(30, sweeps=config.dataset.num_sweeps > 1)))
    config.train.gt_sampling.database = str(out / "gt_database.npz")
    saved = to_dict(config)
    saved["train"]["epochs"] = config.train.epochs + 1
    (out / "run").mkdir()
    (out / "run" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (out / "run" / "checkpoint.pt").write_bytes(b"not read before the config check")
    assert_one_error_line(run_tool_here("demo", "--out", out, "--real-data", tmp_path), "demo",
                          "was trained with another config than configs/centerpoint_synthetic_cpu.yaml",
                          f"train.epochs: run {config.train.epochs + 1}, requested {config.train.epochs}")
    # Today's config.yaml, but weights copied in from a run of another config: the checkpoint's config tells.
    today = to_dict(config)
    (out / "run" / "config.yaml").write_text(yaml.safe_dump(today, sort_keys=False))
    torch.save({"config": saved, "epoch": saved["train"]["epochs"]}, out / "run" / "checkpoint.pt")
    assert_one_error_line(run_tool_here("demo", "--out", out, "--real-data", tmp_path), "demo",
                          "was trained with another config than configs/centerpoint_synthetic_cpu.yaml",
                          f"checkpoint.pt: train.epochs: run {config.train.epochs + 1}, "
                          f"requested {config.train.epochs}")
    # The demo three times as long (make demo DEMO_CONFIG=...) in the folder of the 30-epoch demo
    long = "configs/centerpoint_synthetic_cpu_long.yaml"
    assert_one_error_line(run_tool_here("demo", "--out", out, "--real-data", tmp_path, "--config", long), "demo",
                          f"was trained with another config than {long} (config.yaml: train.epochs: run "
                          f"{config.train.epochs}, requested {3 * config.train.epochs}); remove")


def test_demo_refuses_a_config_that_does_not_read_the_synthetic_world_before_writing(tmp_path):
    """make demo DEMO_CONFIG=<a KITTI or nuScenes config>: the demo would generate the world, then crash (KITTI)
    or look for splits the world does not have."""
    out = tmp_path / "demo"
    for config, expected in (("configs/centerpoint_kitti_cpu.yaml", "dataset.type 'kitti', the world's 'nuscenes'"),
                             ("configs/centerpoint_nuscenes_voxel01.yaml",
                              "dataset.version 'v1.0-trainval', the world's 'v1.0-synthetic'")):
        assert_one_error_line(run_tool_here("demo", "--out", out, "--config", config), "demo",
                              f"{config} does not read the synthetic world", expected,
                              "dataset.train_split 'train', the world's 'synthetic_train'")
        assert not out.exists()


def test_make_demo_passes_its_config_on():
    """README: make demo DEMO_CONFIG=configs/centerpoint_synthetic_cpu_long.yaml. A variable the Makefile dropped
    would run the default config without a word."""
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    dry_run = subprocess.run(["make", "-n", "demo", "DEMO_CONFIG=configs/x.yaml", "DEMO_DIR=work/y"],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2])
    assert "tools/demo.py --out work/y --config configs/x.yaml" in dry_run.stdout
