"""Both GEMM paths of the conv loop (``CONV_GEMM``: torch.mm into reused buffers, oneDNN's linear)
against the dense conv3d oracle, forward and both gradients, in fp32 and under bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F
from sparse_inputs import random_sparse
from test_sparse_conv_vs_dense import SHAPE, check_against_dense, reachable_sites

import backbones.sparse_conv_function as conv_function
from backbones import SparseConv3d, SubMConv3d


@pytest.mark.parametrize("gemm", conv_function.CONV_GEMMS)
def test_submanifold_and_regular_conv_match_dense(monkeypatch, gemm):
    monkeypatch.setattr(conv_function, "CONV_GEMM", gemm)
    x = random_sparse(SHAPE, num_sites=120, seed=21)
    torch.manual_seed(0)
    subm = SubMConv3d(3, 5, 3, bias=False).double()
    check_against_dense(x, subm, lambda d, w: F.conv3d(d, w, padding=1), x.keys())
    x = random_sparse(SHAPE, num_sites=120, seed=22)
    regular = SparseConv3d(3, 4, 3, stride=2, padding=1, bias=False).double()
    check_against_dense(x, regular, lambda d, w: F.conv3d(d, w, stride=2, padding=1),
                        reachable_sites(x, (3, 3, 3), (2, 2, 2), (1, 1, 1), 1))


@pytest.mark.parametrize("gemm", conv_function.CONV_GEMMS)
def test_bf16_products_accumulate_close_to_the_fp32_oracle(monkeypatch, gemm):
    """bf16 multiplies with fp32 accumulation: within bf16's rounding of the inputs (2^-8 relative)
    of the dense fp32 conv, summed over up to 27 x 16 products."""
    monkeypatch.setattr(conv_function, "CONV_GEMM", gemm)
    x = random_sparse(SHAPE, num_sites=200, channels=16, seed=23, dtype=torch.float32).fresh_copy()
    torch.manual_seed(0)
    layer = SubMConv3d(16, 8, 3, bias=False)
    dense = x.dense()
    reference = F.conv3d(dense, layer.weight.permute(0, 4, 1, 2, 3), padding=1)
    b, z, y, x_ = x.coords.long().unbind(1)
    reference = reference[b, :, z, y, x_]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.features.dtype == torch.bfloat16
    scale = float(reference.detach().abs().max())
    torch.testing.assert_close(out.features.float(), reference, rtol=0, atol=0.02 * scale)
    assert float((out.features.float() - reference).detach().abs().max()) > 0  # it really ran in bf16
