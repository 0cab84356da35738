"""The detector benchmark times the stages of the real predict: its staged run gives predict's boxes."""
import torch
from test_config_and_centerpoint import small_model
from test_inference_precision import clouds

from benchmarks.detector import DETECTOR_STAGES, _staged_predict


def test_staged_predict_returns_what_predict_returns():
    torch.manual_seed(0)
    model = small_model().eval()
    points = clouds()
    for precision in ("fp32", "bf16"):
        model.config.inference_precision = precision
        seconds, staged = _staged_predict(model, points)
        whole = model.predict(points)
        assert list(seconds) == list(DETECTOR_STAGES) and all(s >= 0 for s in seconds.values())
        assert len(whole[0]["scores"]) > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(staged[0][key], whole[0][key]), (precision, key)


def test_kitti_config_derives_the_kitti_grid():
    """The benchmark's KITTI case: SECOND's KITTI grid, 4 point features, one head group per class."""
    from test_config_and_centerpoint import CONFIGS

    from detectors.centerpoint import CenterPoint
    from detectors.experiment import load_centerpoint_config

    config = load_centerpoint_config(str(CONFIGS / "centerpoint_kitti_voxel005.yaml"))
    assert config.dataset.type == "kitti" and config.model.num_point_features == 4
    model = CenterPoint(config.model)
    assert model.voxelizers["test"].spatial_shape == (40, 1600, 1408)
    assert model.grid.shape == (200, 176)
    assert [len(group) for group in config.model.head.class_groups] == [1, 1, 1]
