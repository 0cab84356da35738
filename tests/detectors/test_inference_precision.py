"""The opt-in bf16 inference switch (``model.inference_precision``): the sparse convs really run in
bf16, the outputs stay close to the fp32 model's, and a bad value is a config error."""
import numpy as np
import pytest
import torch
from test_config_and_centerpoint import CONFIGS, small_model

from backbones.sparse_modules import SparseConvolution
from detectors.config import ConfigError
from detectors.experiment import load_centerpoint_config


def clouds():
    rng = np.random.default_rng(1)
    return [np.concatenate([rng.uniform(-12, 12, (4000, 2)), rng.uniform(-2, 1, (4000, 1)),
                            rng.uniform(0, 1, (4000, 1))], 1).astype(np.float32)]


def test_bf16_inference_runs_the_convs_in_bf16_close_to_fp32():
    torch.manual_seed(0)
    model = small_model().eval()
    dtypes = []
    hooks = [m.register_forward_hook(lambda module, inputs, output: dtypes.append(output.features.dtype))
             for m in model.modules() if isinstance(m, SparseConvolution)]
    points = clouds()
    with torch.no_grad():
        reference = model(points)
    fp32 = model.predict(points)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    model.config.inference_precision = "bf16"
    with torch.no_grad(), model.inference_autocast():
        low = model(points)
    bf16 = model.predict(points)
    for hook in hooks:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    for group_low, group_ref in zip(low, reference):
        for name, value in group_ref.items():
            # bf16 keeps 8 significant bits: about 1% of the output's scale after a dozen layers.
            scale = value.abs().max()
            torch.testing.assert_close(group_low[name].float(), value, rtol=0, atol=0.05 * float(scale))
    assert bf16[0]["boxes"].dtype == torch.float32 and fp32[0]["boxes"].dtype == torch.float32
    assert abs(len(bf16[0]["scores"]) - len(fp32[0]["scores"])) <= max(2, len(fp32[0]["scores"]) // 10)


def test_bf16_with_spconv_on_cpu_is_refused_by_name():
    from backbones.sparse_modules import set_backend

    model = small_model().eval()
    model.config.inference_precision = "bf16"
    set_backend(model, "spconv")
    with pytest.raises(ValueError, match=r"backend \['spconv'\] takes no bfloat16 on cpu"):
        model.predict(clouds())


def test_unknown_inference_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="inference_precision.*'fp16'"):
        load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"), ["model.inference_precision=fp16"])
    config = load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"),
                                     ["model.inference_precision=bf16"])
    assert config.model.inference_precision == "bf16"
