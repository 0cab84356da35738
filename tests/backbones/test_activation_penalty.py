"""Activation penalties: gradients against finite differences, and the training option that adds
them to CenterPoint's loss from the features after each activation of the sparse backbone."""
from pathlib import Path

import numpy as np
import pytest
import torch
from sparse_inputs import random_sparse

from backbones import VoxelResBackBone8x
from backbones.activation_penalty import ActivationPenalty, ActivationPenaltyConfig
from backbones.activation_sparsity import ACTIVATIONS, hoyer_square_penalty, l1_activation_penalty
from detectors.config import ConfigError

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")


def away_from_zero(shape, seed):
    """float64 values with |x| >= 0.1, so that a finite-difference step never crosses |x|'s kink."""
    g = torch.Generator().manual_seed(seed)
    magnitude = 0.1 + torch.rand(shape, generator=g, dtype=torch.float64)
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
    return (magnitude * sign).requires_grad_()


@pytest.mark.parametrize("penalty", [
    l1_activation_penalty,
    hoyer_square_penalty,
    lambda activations: hoyer_square_penalty(activations, per_element=True),
], ids=["l1", "hoyer_square", "hoyer_square_per_element"])
def test_penalty_gradients_match_finite_differences(penalty):
    a, b = away_from_zero((7, 3), 0), away_from_zero((4, 5), 1)
    assert torch.autograd.gradcheck(lambda a, b: penalty([a, b]), (a, b), eps=1e-6, atol=1e-7)


def test_per_element_hoyer_square_is_the_mean_effective_density():
    a = np.array([[3.0, 0.0], [0.0, -4.0]])
    b = np.array([1.0, 1.0, 1.0])
    expected = (np.abs(a).sum() ** 2 / (a ** 2).sum() / a.size + 1.0) / 2  # b: all equal, density 1
    value = hoyer_square_penalty([torch.tensor(a), torch.tensor(b)], per_element=True)
    assert float(value) == pytest.approx(expected)


def test_penalty_config_is_checked():
    with pytest.raises(ValueError, match="must be one of"):
        ActivationPenaltyConfig("l2", 1.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        ActivationPenaltyConfig("l1", -1.0)
    from detectors.experiment import load_centerpoint_config
    with pytest.raises(ConfigError, match="unknown key model.backbone_3d.activation_penalty.scale"):
        load_centerpoint_config(CONFIG, ["model.backbone_3d.activation_penalty={type: l1, weight: 1, scale: 2}"])


@pytest.mark.parametrize("kind", ["l1", "hoyer_square"])
def test_penalty_reads_every_activation_output_of_a_training_forward(kind):
    torch.manual_seed(0)
    backbone = VoxelResBackBone8x(4, channels=(4, 4, 8, 8), out_channels=8, activation_topk=None).train()
    penalty = ActivationPenalty(backbone, ActivationPenaltyConfig(kind, 0.5))
    outputs = []  # an independent record of the activations' outputs
    for module in backbone.modules():
        if isinstance(module, ACTIVATIONS):
            module.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    x = random_sparse((40, 32, 32), batch_size=2, num_sites=500, channels=4, seed=0, dtype=torch.float32)
    backbone(x)
    # conv_input, conv1 (2 blocks of 2), conv2..conv4 (down + 2 blocks of 2), conv_out
    assert len(outputs) == len(penalty.activations) == 1 + 4 + 3 * 5 + 1
    losses = penalty.add_to({"loss": torch.tensor(2.0)})
    if kind == "l1":
        expected = sum(o.abs().sum() for o in outputs) / sum(o.numel() for o in outputs)
    else:
        expected = sum(o.sum() ** 2 / (o ** 2).sum() / o.numel() for o in outputs) / len(outputs)
    assert float(losses["activation_penalty"].detach()) == pytest.approx(0.5 * float(expected), rel=1e-5)
    assert float(losses["loss"].detach()) == pytest.approx(2.0 + 0.5 * float(expected), rel=1e-5)
    losses["activation_penalty"].backward()
    assert backbone.conv_input[0].weight.grad.abs().sum() > 0
    # Evaluation forwards record nothing, and a loss without a training forward is refused.
    backbone.eval()
    with torch.no_grad():
        backbone(x)
    with pytest.raises(RuntimeError, match="no activations recorded"):
        penalty.add_to({"loss": torch.tensor(0.0)})


def test_centerpoint_adds_the_configured_penalty_to_its_loss():
    from detectors.centerpoint import CenterPoint
    from detectors.experiment import load_centerpoint_config

    tiny = ["model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
            "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]",
            "model.head.shared_channels=8", "model.head.head_channels=8"]
    plain = load_centerpoint_config(CONFIG, tiny)
    penalty_option = "model.backbone_3d.activation_penalty={type: hoyer_square, weight: 2}"
    penalised = load_centerpoint_config(CONFIG, [*tiny, penalty_option])
    assert penalised.model.backbone_3d.activation_penalty == ActivationPenaltyConfig("hoyer_square", 2.0)
    g = torch.Generator().manual_seed(0)
    cloud = torch.cat([torch.rand((3000, 3), generator=g) * torch.tensor([80.0, 80.0, 4.0]) - torch.tensor(
        [40.0, 40.0, 2.0]), torch.zeros((3000, 2))], dim=1)
    boxes = torch.tensor([[5.0, 3.0, -1.0, 4.5, 1.9, 1.6, 0.3, 0.0, 0.0]]).numpy()
    losses = {}
    for name, config in (("plain", plain), ("penalised", penalised)):
        torch.manual_seed(0)
        model = CenterPoint(config.model).train()
        targets = [{k: v.unsqueeze(0) for k, v in group.items()}
                   for group in model.targets(boxes, np.array([0]))]
        losses[name] = model.loss(model([torch.as_tensor(cloud)]), targets)
    assert "activation_penalty" not in losses["plain"]
    penalty = losses["penalised"]["activation_penalty"]
    assert 0 < float(penalty.detach()) <= 2.0
    expected = float((losses["plain"]["loss"] + penalty).detach())
    assert float(losses["penalised"]["loss"].detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_training_logs_the_penalty_separately(tmp_path):
    import json

    from datasets.nuscenes_writer import make_synthetic_database
    from detectors.experiment import load_centerpoint_config
    from detectors.training import train

    make_synthetic_database(str(tmp_path / "db"), scenes=2, seed=3, keyframes_per_scene=3, sweeps=False)
    config = load_centerpoint_config(CONFIG, [
        f"dataset.root={tmp_path / 'db'}", "dataset.num_sweeps=1", "model.backbone_3d.channels=[4, 4, 8, 8]",
        "model.backbone_3d.out_channels=8", "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]",
        "model.bev.upsample_filters=[8, 8]", "model.head.shared_channels=8", "model.head.head_channels=8",
        "train.gt_sampling=null", "train.log_every=1", "train.batch_size=2", "train.processes=1",
        "model.backbone_3d.activation_penalty={type: l1, weight: 0.5}"])
    train(config, str(tmp_path / "run"), max_steps=2, progress=False)
    steps = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][:-1]
    assert len(steps) == 2
    for entry in steps:
        head = config.model.head
        parts = sum(value * (head.heatmap_weight if key.endswith("_heatmap") else head.regression_weight)
                    for key, value in entry.items() if key.startswith("group"))
        assert entry["activation_penalty"] > 0
        assert entry["loss"] == pytest.approx(parts + entry["activation_penalty"], rel=1e-4)
