"""Cross-process BatchNorm: plain BatchNorm in one process; conversion keeps parameters and statistics.
(Its statistics across processes are tested end to end in tests/detectors/test_training.py, where
two gloo processes train exactly as one process with the global batch.)"""
import copy

import torch
from torch import nn

from backbones.cross_process_batch_norm import CrossProcessBatchNorm, convert_to_cross_process_batch_norm


def test_without_a_process_group_it_is_batch_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3, momentum=0.01), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5))
    reference = copy.deepcopy(model)
    with torch.no_grad():
        model[1].running_mean.uniform_()
        reference[1].running_mean.copy_(model[1].running_mean)
    converted = convert_to_cross_process_batch_norm(model)
    assert isinstance(converted[1], CrossProcessBatchNorm) and isinstance(converted[5], CrossProcessBatchNorm)
    assert converted[1].eps == 1e-3 and converted[1].momentum == 0.01
    x = torch.randn(6, 3, 8, 8)
    for mode in (True, False):
        converted.train(mode), reference.train(mode)
        torch.testing.assert_close(converted(x), reference(x))
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(converted.state_dict()[key], value, msg=key)
    empty = CrossProcessBatchNorm(4).train()
    assert empty(torch.zeros(0, 4)).shape == (0, 4)  # nothing to normalise: returned as it is
