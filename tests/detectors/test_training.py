"""Training and evaluation end to end on a tiny synthetic database: resume is bitwise, the run
folder holds what it should, evaluation goes through the official devkit."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import skip_if_extra_missing

from datasets.nuscenes_writer import make_synthetic_database
from detectors.centerpoint import CenterPoint
from detectors.checkpoints import load_checkpoint
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config
from detectors.training import seed_everything, train

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_db")
    make_synthetic_database(str(root), scenes=2, seed=3, keyframes_per_scene=3, sweeps=False)
    return str(root)


TINY = ["dataset.num_sweeps=1", "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
        "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]",
        "model.head.shared_channels=8", "model.head.head_channels=8", "train.gt_sampling=null", "train.log_every=1",
        "train.processes=1"]


def tiny_config(root, *extra):
    return load_centerpoint_config(CONFIG, [f"dataset.root={root}", *TINY, "train.epochs=2", "train.batch_size=2",
                                            *extra])


def test_resume_after_an_interruption_gives_the_same_weights(database, tmp_path):
    config = tiny_config(database, "train.augmentation={flip_x: 0.5, rotation: [-0.3, 0.3]}")
    assert config.train.augmentation.flip_x == 0.5 and config.train.augmentation.scaling == [0.95, 1.05]
    straight = train(config, str(tmp_path / "straight"), progress=False)
    assert straight["steps"] == 4  # 3 training frames, batches of 2, 2 epochs
    interrupted = train(config, str(tmp_path / "interrupted"), max_steps=3, progress=False)
    assert interrupted["steps"] == 3
    resumed = train(config, str(tmp_path / "interrupted"), resume=True, progress=False)
    assert resumed["steps"] == 4
    a = load_checkpoint(straight["checkpoint"])
    b = load_checkpoint(resumed["checkpoint"])
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    run = tmp_path / "straight"
    assert (run / "config.yaml").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log[:-1]] == [1, 2, 3, 4] and all("loss" in entry for entry in log[:-1])
    assert all(entry["data_time"] >= 0 and entry["step_time"] > 0 for entry in log[:-1])
    assert log[-1]["event"] == "end" and log[-1]["world_size"] == 1


def test_evaluate_writes_results_and_official_metrics(database, tmp_path):
    config = tiny_config(database)
    result = train(config, str(tmp_path / "run"), max_steps=1, progress=False)
    metrics = evaluate(config, result["checkpoint"], str(tmp_path / "eval"))
    assert (tmp_path / "eval" / "results_nusc.json").is_file()
    assert (tmp_path / "eval" / "metrics_summary.json").is_file()
    assert 0.0 <= metrics["mean_ap"] <= 1.0 and set(metrics["mean_dist_aps"]) >= {"car", "pedestrian"}


def test_training_without_a_dataset_section_is_refused(tmp_path):
    config = load_centerpoint_config(CONFIG, ["dataset=null"])
    with pytest.raises(ValueError, match="no dataset section"):
        train(config, str(tmp_path))
    kitti = load_centerpoint_config(CONFIG, [f"dataset={{type: kitti, root: {tmp_path}}}"])
    with pytest.raises(ValueError, match="is not a KITTI object folder: no velodyne/"):
        train(kitti, str(tmp_path))


def test_torchrun_two_processes_train_as_one_process_with_the_global_batch(database, tmp_path):
    """DDP with gloo on CPU, one frame per process: the ranks end bitwise identical, and equal (to
    float tolerance) to one process training on both frames at once — BatchNorm statistics and the
    loss normalisers are taken over the global batch (cross-process BatchNorm, averaged counts)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               str(root / "tools" / "train.py"), CONFIG, *TINY, f"dataset.root={database}", "train.batch_size=1",
               "train.batch_norm=global", "train.epochs=1", "--out", str(run), "--max-steps", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    skip_if_extra_missing(completed.stderr)
    assert completed.returncode == 0, completed.stderr[-3000:]
    end = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert end["world_size"] == 2 and end["steps"] == 1
    assert end["ranks_in_sync"] and end["weight_checksums"][0] == end["weight_checksums"][1]

    single = train(tiny_config(database, "train.batch_size=2", "train.epochs=1"), str(tmp_path / "one"), max_steps=1,
                   progress=False)
    seed_everything(0)  # the initial weights train() starts from (config seed 0)
    initial = CenterPoint(tiny_config(database).model)
    ddp_state = load_checkpoint(str(run / "checkpoint.pt"))["model"]
    one_state = load_checkpoint(single["checkpoint"])["model"]
    # Adam's first step moves each weight by about lr * sign(gradient): a weight whose gradient is at
    # float-noise level may step the other way. So: all within two steps of each other (a step measured as
    # the one-process run's largest move: a schedule this short starts near its peak, not at lr / div_factor),
    # and all but a handful equal to float tolerance (the gradients themselves agree to ~1e-5 relative).
    start = initial.state_dict()
    step = 2 * max(float((value - start[key]).abs().max()) for key, value in one_state.items()
                   if value.is_floating_point() and "running" not in key and "num_batches" not in key)
    assert 0 < step < 0.01
    moved = mismatched = total = 0
    for key, value in one_state.items():
        if value.is_floating_point():
            difference = (ddp_state[key] - value).abs()
            assert difference.max() <= step, key
            mismatched += int((difference > 1e-5 + 1e-4 * value.abs()).sum())
            total += value.numel()
            moved += not torch.equal(value, initial.state_dict()[key])
    assert mismatched <= total // 1000, f"{mismatched} of {total} weights differ"
    assert moved > 20  # the step changed the weights (and the running statistics) that were compared


def _batch_norm_statistics(state: dict) -> dict:
    return {key: value for key, value in state.items() if key.endswith(("running_mean", "running_var"))}


def test_train_processes_start_the_same_group_as_torchrun(database, tmp_path, monkeypatch):
    """``train.processes: 2``: train() starts the group itself. With global BatchNorm it trains as torchrun
    does (above: as one process with both frames, to float tolerance); with per-process BatchNorm each
    process normalises over its own frame, so after one step the running statistics are those of one
    process trained on rank 0's frame alone."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # one thread per process, on any machine
    settings = ("train.processes=2", "train.batch_size=1", "train.epochs=1")
    grouped = {}
    for batch_norm in ("global", "per_process"):
        result = train(tiny_config(database, *settings, f"train.batch_norm={batch_norm}"),
                       str(tmp_path / batch_norm), max_steps=1, progress=False)
        end = json.loads((tmp_path / batch_norm / "log.jsonl").read_text().splitlines()[-1])
        assert end["world_size"] == 2 and end["steps"] == 1 and end["ranks_in_sync"] and result["ranks_in_sync"]
        grouped[batch_norm] = load_checkpoint(result["checkpoint"])["model"]
        assert all(torch.equal(value, grouped[batch_norm][key]) for key, value in result["model"].state_dict().items())
    alone = {}
    for batch in (1, 2):
        config = tiny_config(database, f"train.batch_size={batch}", "train.epochs=1")
        result = train(config, str(tmp_path / f"b{batch}"), max_steps=1, progress=False)
        alone[batch] = _batch_norm_statistics(load_checkpoint(result["checkpoint"])["model"])
    per_process, global_ = _batch_norm_statistics(grouped["per_process"]), _batch_norm_statistics(grouped["global"])
    assert len(per_process) > 20
    for key, value in per_process.items():
        torch.testing.assert_close(value, alone[1][key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(global_[key], alone[2][key], rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(value, alone[2][key], rtol=1e-3, atol=1e-4) for key, value in per_process.items())


def test_an_error_in_a_training_process_is_raised_as_it_was(database, tmp_path):
    from detectors.local_processes import TrainingProcessTraceback

    config = tiny_config(database, "train.processes=2", "train.batch_size=1", "dataset.train_split=no_such_split")
    with pytest.raises(ValueError, match="no_such_split") as raised:
        train(config, str(tmp_path / "run"), max_steps=1, progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    # raised in a training process: its traceback there is the cause
    cause = raised.value.__cause__
    assert isinstance(cause, TrainingProcessTraceback) and "training process 0 of 2" in str(cause)
    assert "build_training_run" in str(cause)


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()  # the name in parentheses may hold spaces
        except (OSError, IndexError):  # not a process, or one that just ended
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the training processes in /proc")
def test_training_processes_stop_when_the_process_that_started_them_is_killed(database, tmp_path):
    """Killed (not Ctrl-C, which reaches the whole group), the starter leaves its training processes behind;
    they stop instead of training on and writing checkpoints into a run folder that may be started again."""
    run = tmp_path / "run"
    overrides = [f"dataset.root={database}", *TINY, "train.processes=2", "train.batch_size=1", "train.epochs=10000"]
    script = (f"import sys, torch; sys.path[:0] = {sys.path!r}; torch.set_num_threads(2)\n"
              "from detectors.experiment import load_centerpoint_config\n"
              "from detectors.training import train\n"
              f"train(load_centerpoint_config({CONFIG!r}, {overrides!r}), {str(run)!r}, progress=False)\n")
    starter = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        deadline = time.monotonic() + 180
        while not ((run / "log.jsonl").is_file() and (run / "log.jsonl").read_text().count("\n") >= 2):
            if starter.poll() is not None:
                pytest.fail(f"the training ended before its first steps: {starter.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, "no training step within 180 s"
            time.sleep(0.2)
        workers = _children(starter.pid)
        assert len(workers) >= 2  # the two training processes (and multiprocessing's resource tracker)
        starter.kill()
        starter.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
        assert "the process that started it" in starter.stderr.read()
        steps = (run / "log.jsonl").read_text()
        time.sleep(1)
        assert (run / "log.jsonl").read_text() == steps
    finally:
        starter.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, 9)


def test_training_leaves_the_process_group_it_joined_and_keeps_the_callers(database, tmp_path, monkeypatch):
    """A group left to the interpreter's exit can abort a good torchrun run (gloo's threads outlive Python)."""
    import torch.distributed as dist

    from detectors import training

    def join_a_group_of_one():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
        return 0, 1

    monkeypatch.setattr(training, "distributed_context", join_a_group_of_one)
    train(tiny_config(database), str(tmp_path / "joined"), max_steps=1, progress=False)
    assert not dist.is_initialized()

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'callers'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(training, "distributed_context", lambda: (0, 1))
        train(tiny_config(database), str(tmp_path / "callers_run"), max_steps=1, progress=False)
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()


def test_gt_sampling_and_cbgs_train(database, tmp_path):
    config = tiny_config(database, f"train.gt_sampling={{database: {tmp_path / 'gt.npz'}, sample_groups: {{car: 2}}}}",
                         "train.cbgs=true")
    result = train(config, str(tmp_path / "run"), max_steps=2, progress=False)
    assert result["steps"] == 2 and (tmp_path / "gt.npz").is_file()


def test_precise_batch_norm_takes_the_average_of_the_batch_statistics():
    from detectors.training import recompute_batch_norm_statistics

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=0.01)).eval()
    batches = [torch.randn(8, 3) * (i + 1) for i in range(3)]
    with torch.no_grad():
        features = [model[0](batch) for batch in batches]
    used = recompute_batch_norm_statistics(model, iter(batches + batches), limit=3)
    assert used == 3 and not model.training and model[1].momentum == 0.01
    torch.testing.assert_close(model[1].running_mean, torch.stack([f.mean(0) for f in features]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([f.var(0) for f in features]).mean(0))
