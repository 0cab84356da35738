"""Run folders are never clobbered, a run or an evaluation of nothing is an error, and checkpoints
are read without running code (a hostile pickle is refused and leaves no trace)."""
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from datasets.nuscenes_writer import make_synthetic_database
from detectors.centerpoint import CenterPoint
from detectors.checkpoints import load_checkpoint, load_model_weights, restore_rng_states, rng_states
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config
from detectors.run_folder import hold_run_folder
from detectors.training import train

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")
TINY = ["dataset.num_sweeps=1", "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
        "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]",
        "model.head.shared_channels=8", "model.head.head_channels=8", "train.gt_sampling=null", "train.log_every=1",
        "train.epochs=2", "train.batch_size=2", "train.processes=1"]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_db")
    make_synthetic_database(str(root), scenes=2, seed=3, keyframes_per_scene=3, sweeps=False)
    return str(root)


def tiny_config(root, *extra):
    return load_centerpoint_config(CONFIG, [f"dataset.root={root}", *TINY, *extra])


def folder_contents(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder``: what a refused call must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint whose pickle, when loaded unsafely, creates ``marker`` (a stand-in for any code)."""
    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"model": {"weight": Payload()}, "epoch": 0}, path)
    return path


@pytest.fixture(scope="module")
def finished_step(database, tmp_path_factory):
    """A run folder after one step (seed 0), kept read-only by the tests that use it (they copy it)."""
    run = tmp_path_factory.mktemp("one_step") / "run"
    train(tiny_config(database), str(run), max_steps=1, progress=False)
    return run


def copy_run(source: Path, target: Path) -> Path:
    import shutil
    shutil.copytree(source, target)
    return target


def test_a_new_run_into_a_folder_with_a_checkpoint_is_refused_and_nothing_changes(database, finished_step, tmp_path):
    run = copy_run(finished_step, tmp_path / "run")
    before = folder_contents(run)
    with pytest.raises(ValueError, match="already holds a checkpoint: pass --resume to continue it, --overwrite"):
        train(tiny_config(database, "train.seed=1"), str(run), max_steps=1, progress=False)
    assert folder_contents(run) == before
    # A folder with the files of a run but no checkpoint (interrupted before its first one): also refused,
    # since the new run would append to the old log.
    (run / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match=r"the files of a run \(config.yaml, log.jsonl"):
        train(tiny_config(database), str(run), max_steps=1, progress=False)


def test_overwrite_moves_the_old_run_aside_and_starts_a_clean_one(database, finished_step, tmp_path):
    run = copy_run(finished_step, tmp_path / "run")
    before = folder_contents(run)
    result = train(tiny_config(database, "train.seed=1"), str(run), max_steps=2, progress=False, overwrite=True)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(moved) == 1 and folder_contents(moved[0]) == before  # nothing deleted, nothing changed
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry.get("step") for entry in log[:-1]] == [1, 2] and log[-1] == {**log[-1], "event": "end", "steps": 2}
    assert result["steps"] == 2 and load_checkpoint(str(run / "checkpoint.pt"))["steps"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 1


def test_resume_without_a_checkpoint_is_an_error_that_writes_nothing(database, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="--resume: .*empty holds no checkpoint.pt to continue from"):
        train(tiny_config(database), str(empty), resume=True, progress=False)
    assert list(empty.iterdir()) == []
    with pytest.raises(ValueError, match="holds no checkpoint.pt"):
        train(tiny_config(database), str(tmp_path / "absent"), resume=True, progress=False)
    assert not (tmp_path / "absent").exists()
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        train(tiny_config(database), str(empty), resume=True, overwrite=True, progress=False)


def test_a_folder_that_another_training_holds_is_refused_until_that_training_ends(database, tmp_path):
    """Two trainings of one folder (another terminal, a job restarted while the first still runs) would write
    their checkpoints and log lines between each other's."""
    run = tmp_path / "run"
    with hold_run_folder(str(run)):  # the other training's hold
        # one process, or the rank that writes in the processes train() starts (the demo's config has two)
        for processes in (1, 2):
            with pytest.raises(ValueError, match=r"run folder .*run is being trained by process \d+ on .+ \(since "
                                                 r".+\): wait for that training to end or stop it, or choose another"):
                train(tiny_config(database, f"train.processes={processes}", "train.batch_size=1"), str(run),
                      max_steps=1, progress=False)
        assert not run.exists()
        assert train(tiny_config(database), str(tmp_path / "other"), max_steps=1, progress=False)["steps"] == 1
    assert train(tiny_config(database), str(run), max_steps=1, progress=False)["steps"] == 1
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path / "third", target_is_directory=True)
    with hold_run_folder(str(alias)):  # the same folder under another name
        with pytest.raises(ValueError, match="is being trained by process"):
            train(tiny_config(database), str(tmp_path / "third"), max_steps=1, progress=False)


def test_resume_with_another_model_lists_the_differences_before_writing(database, finished_step, tmp_path):
    run = copy_run(finished_step, tmp_path / "run")
    before = folder_contents(run)
    wider = tiny_config(database, "model.backbone_3d.channels=[8, 8, 16, 16]", "train.epochs=3")
    with pytest.raises(ValueError) as refused:
        train(wider, str(run), resume=True, progress=False)
    message = str(refused.value)
    assert "model.backbone_3d.channels: run [4, 4, 8, 8], requested [8, 8, 16, 16]" in message
    assert "train.epochs: run 2, requested 3" in message
    assert message.index("model.backbone_3d.channels") < message.index("train.epochs")  # model fields first
    assert folder_contents(run) == before  # config.yaml not rewritten, log not appended to
    # Settings that do not change what is computed may differ.
    resumed = train(tiny_config(database, "train.log_every=2"), str(run), resume=True, max_steps=2, progress=False)
    assert resumed["steps"] == 2
    events = [json.loads(line).get("event") for line in (run / "log.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1


def test_resume_refuses_a_checkpoint_copied_in_from_a_run_of_another_config(database, finished_step, tmp_path):
    """config.yaml agrees, but the weights were trained with another config: the checkpoint's own says so."""
    other = tmp_path / "other"
    train(tiny_config(database, "train.epochs=3"), str(other), max_steps=1, progress=False)
    run = copy_run(finished_step, tmp_path / "run")
    (run / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    before = folder_contents(run)
    with pytest.raises(ValueError, match=r"checkpoint\.pt: train\.epochs: run 3, requested 2"):
        train(tiny_config(database), str(run), resume=True, progress=False)
    assert folder_contents(run) == before


def test_resume_of_a_finished_run_and_zero_steps_are_errors(database, tmp_path):
    with pytest.raises(ValueError, match="train.epochs"):  # refused by the config (load time) or by train()
        train(tiny_config(database, "train.epochs=0"), str(tmp_path / "zero"), progress=False)
    config = tiny_config(database)
    config.train.epochs = 0  # a config built in Python, past the loader's checks
    with pytest.raises(ValueError, match="training would take 0 steps: train.epochs = 0"):
        train(config, str(tmp_path / "zero"), progress=False)
    assert not (tmp_path / "zero").exists()
    with pytest.raises(ValueError, match="max_steps must be at least 1, got 0"):
        train(tiny_config(database), str(tmp_path / "zero"), max_steps=0, progress=False)
    run = tmp_path / "done"
    train(tiny_config(database, "train.epochs=1"), str(run), progress=False)
    before = folder_contents(run)
    with pytest.raises(ValueError, match=r"has finished \(1 of 1 epochs, 2 steps\): nothing left to train"):
        train(tiny_config(database, "train.epochs=1"), str(run), resume=True, progress=False)
    assert folder_contents(run) == before


def database_with_an_empty_split(database: str, folder: Path) -> str:
    """A copy of ``database`` whose splits.json also lists a split 'nothing' of no scenes."""
    import shutil
    shutil.copytree(database, folder, ignore=shutil.ignore_patterns(".sparsevox*"))
    splits = folder / "v1.0-synthetic" / "splits.json"
    splits.write_text(json.dumps({**json.loads(splits.read_text()), "nothing": []}))
    return str(folder)


def test_evaluating_a_split_of_no_frames_is_an_error_not_a_map_of_zero(database, finished_step, tmp_path):
    config = tiny_config(database_with_an_empty_split(database, tmp_path / "db"))
    with pytest.raises(ValueError, match="no frames|no scenes|empty"):
        evaluate(config, str(finished_step / "checkpoint.pt"), str(tmp_path / "eval"), split="nothing")
    assert not (tmp_path / "eval" / "metrics_summary.json").exists()


def test_evaluating_with_a_config_the_checkpoint_was_not_trained_with_is_refused(database, finished_step, tmp_path):
    # A range shifted up by 1 m keeps every weight's shape: the weights would load and score boxes 1 m off.
    shifted = tiny_config(database, "model.geometry.point_cloud_range=[-51.2, -51.2, -2.0, 51.2, 51.2, 6.0]")
    with pytest.raises(ValueError,
                       match=r"model\.geometry = .*-2\.0.*trained with .*-3\.0.*checkpoint\.pt \('config' entry\)"):
        evaluate(shifted, str(finished_step / "checkpoint.pt"), str(tmp_path / "eval"))
    assert not (tmp_path / "eval").exists()
    # Copied out of its run folder, the checkpoint still carries its config.
    moved = tmp_path / "elsewhere" / "weights.pt"
    moved.parent.mkdir()
    moved.write_bytes((finished_step / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match=r"model\.geometry = .*-2\.0.*trained with .*-3\.0.*weights\.pt"):
        evaluate(shifted, str(moved), str(tmp_path / "eval"))


def test_an_earlier_evaluation_is_not_replaced_unless_asked(database, finished_step, tmp_path):
    config, checkpoint, out = tiny_config(database), str(finished_step / "checkpoint.pt"), tmp_path / "eval"
    first = evaluate(config, checkpoint, str(out))
    before = folder_contents(out)
    with pytest.raises(FileExistsError, match=r"holds an earlier evaluation \(results_nusc\.json, "
                                              r"metrics_summary\.json.*--overwrite"):
        evaluate(config, checkpoint, str(out))
    assert folder_contents(out) == before
    assert evaluate(config, checkpoint, str(out), overwrite=True)["mean_ap"] == first["mean_ap"]


def test_training_on_a_split_of_no_frames_is_an_error_that_writes_nothing(database, tmp_path):
    config = tiny_config(database_with_an_empty_split(database, tmp_path / "db"), "dataset.train_split=nothing")
    with pytest.raises(ValueError, match="0 steps|no frames|no scenes|empty"):
        train(config, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run").exists()


def test_checkpoints_load_with_weights_only_and_rng_states_round_trip(finished_step):
    state = torch.load(finished_step / "checkpoint.pt", weights_only=True)  # torch itself accepts the file
    assert set(state) >= {"model", "optimizer", "scheduler", "epoch", "step_in_epoch", "steps", "rng"}
    import random

    import numpy as np
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in both generators
    saved = rng_states()
    expected = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3))
    torch.save({"rng": saved}, finished_step.parent / "rng.pt")
    restore_rng_states(torch.load(finished_step.parent / "rng.pt", weights_only=True)["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])


@pytest.mark.parametrize("reader", ["load_checkpoint", "evaluate", "resume", "visualize", "densify"])
def test_a_hostile_checkpoint_is_refused_and_nothing_runs(reader, database, finished_step, tmp_path):
    marker = tmp_path / "marker"
    config = tiny_config(database)
    if reader == "resume":
        run = copy_run(finished_step, tmp_path / "run")
        path = hostile_checkpoint(run / "checkpoint.pt", marker)
    else:
        path = hostile_checkpoint(tmp_path / "hostile.pt", marker)
    with pytest.raises(ValueError, match=r"refused: the checkpoint's pickle asks for \S*open"):
        if reader == "load_checkpoint":
            load_checkpoint(str(path))
        elif reader == "evaluate":
            evaluate(config, str(path), str(tmp_path / "eval"))
        elif reader == "resume":
            train(config, str(run), resume=True, progress=False)
        elif reader == "visualize":
            from visualization.views import detector_panels
            detector_panels(config, {"points": torch.zeros(0, 5).numpy()}, str(path))
        else:
            from backbones.voxel_backbones import backbone_weights
            backbone_weights(load_checkpoint(str(path)))
    assert not marker.exists()


def test_files_that_are_not_checkpoints_and_weights_of_another_model_are_named(database, finished_step, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=f"{text}: not a PyTorch checkpoint"):
        load_checkpoint(str(text))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_checkpoint(str(tmp_path / "empty.pt"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(IsADirectoryError):
        load_checkpoint(str(tmp_path))
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a checkpoint dict or a state_dict, got list"):
        load_checkpoint(str(tmp_path / "list.pt"))
    wider = CenterPoint(tiny_config(database, "model.backbone_3d.channels=[8, 8, 16, 16]").model)
    untouched = {key: value.clone() for key, value in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"do not fit the model of this config; \d+ shape \(checkpoint vs model\): "
                                         r"backbone_3d\.conv_input\.0\.weight \[4, 3, 3, 3, 5\] vs \[8, 3, 3, 3, 5\]"):
        load_model_weights(wider, str(finished_step / "checkpoint.pt"))
    assert all(torch.equal(value, untouched[key]) for key, value in wider.state_dict().items())  # nothing loaded


def test_an_interrupted_atomic_write_leaves_an_orphan_that_the_next_write_removes(tmp_path):
    """A process killed between writing its temporary file and renaming it (os._exit in fsync)."""
    import subprocess
    import sys

    from atomic_files import write_json_atomically
    target = tmp_path / "metrics.json"
    write_json_atomically(str(target), {"run": 1})
    script = ("import os, sys; import atomic_files as a; os.fsync = lambda fd: os._exit(9); "
              f"a.write_json_atomically({str(target)!r}, {{'run': 2}})")
    root = Path(__file__).resolve().parents[2]
    completed = subprocess.run([sys.executable, "-c", script], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    assert completed.returncode == 9
    orphans = [p.name for p in tmp_path.iterdir() if p.name != "metrics.json"]
    assert len(orphans) == 1 and orphans[0].startswith(".metrics.json.") and orphans[0].endswith(".tmp")
    assert json.loads(target.read_text()) == {"run": 1}  # the reader still sees the previous file
    # A temporary of a running process (this one) and one of another file are left alone.
    live = tmp_path / f".metrics.json.{os.getpid()}-abcdefgh.tmp"
    other = tmp_path / ".metrics.json.bak.12-abcdefgh.tmp"
    live.write_text("in progress")
    other.write_text("another file's")
    write_json_atomically(str(target), {"run": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", live.name, other.name])
    assert json.loads(target.read_text()) == {"run": 3}


def test_a_checkpoint_of_the_earlier_format_still_resumes_to_the_same_weights(database, finished_step, tmp_path):
    """Earlier versions pickled NumPy's random state as an array: such a run resumes exactly as one
    saved in the current format (the same states, written the old way)."""
    import numpy as np
    current = copy_run(finished_step, tmp_path / "current")
    legacy = copy_run(finished_step, tmp_path / "legacy")
    state = torch.load(legacy / "checkpoint.pt", weights_only=True)
    python, numpy_state = state["rng"]["python"], state["rng"]["numpy"]
    state["rng"]["python"] = (python["version"], tuple(python["state"]), python["gauss_next"])
    state["rng"]["numpy"] = (numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32),
                             numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    torch.save(state, legacy / "checkpoint.pt")
    config = tiny_config(database)
    a = train(config, str(current), resume=True, progress=False)
    b = train(config, str(legacy), resume=True, progress=False)
    assert a["steps"] == b["steps"] == 4
    for key, value in a["model"].state_dict().items():
        assert torch.equal(value, b["model"].state_dict()[key]), key


def test_a_numpy_object_array_in_a_checkpoint_is_refused(tmp_path):
    import numpy as np
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"model": {}, "rng": np.array([Payload()], dtype=object)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint of tensors and plain values"):
        load_checkpoint(str(tmp_path / "objects.pt"))
    assert not marker.exists()


def test_resume_with_another_number_of_batches_per_epoch_and_a_file_as_run_folder_are_refused(
        database, finished_step, tmp_path):
    """A run interrupted under torchrun with 2 processes has half the batches per epoch of one process:
    its position in the epoch would point at other frames."""
    run = copy_run(finished_step, tmp_path / "run")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["batches_per_epoch"] == 2 and state["world_size"] == 1
    torch.save({**state, "batches_per_epoch": 1, "world_size": 2}, run / "checkpoint.pt")
    before = folder_contents(run)
    with pytest.raises(ValueError, match="trained with 1 batches per epoch \\(world size 2\\), this run has 2"):
        train(tiny_config(database), str(run), resume=True, progress=False)
    assert folder_contents(run) == before
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="a_file is a file, not a folder"):
        train(tiny_config(database), str(a_file), progress=False)


def test_resume_with_max_steps_already_reached_is_refused(database, finished_step, tmp_path):
    run = copy_run(finished_step, tmp_path / "run")
    before = folder_contents(run)
    with pytest.raises(ValueError, match="has done 1 steps already; max_steps 1 counts all steps of the run"):
        train(tiny_config(database), str(run), resume=True, max_steps=1, progress=False)
    assert folder_contents(run) == before
