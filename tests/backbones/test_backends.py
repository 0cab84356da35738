"""One suite over the table of backends: every other backend against the torch reference (spconv is the
oracle for the reference), backend switching, state_dict portability, kernel-map sharing, and the edge
cases. A backend that is not installed here is skipped."""
import pytest
import torch

from backbones.backends import BACKENDS, REFERENCE_BACKEND
from backbones import (SparseConv3d, SparseInverseConv3d, SparseSequential, SubMConv3d, VoxelResBackBone8x,
                       set_backend)
from conftest import KITTI_SCANS, NUSCENES_KEYFRAME
from datasets import read_points
from sparse_inputs import random_sparse
from voxelize import SparseTensor
from voxelize.presets import preset_voxelizer

SHAPE = (9, 20, 22)


def installed(name: str) -> str:
    if not BACKENDS[name].available():
        pytest.skip(f"backend {name!r} is not installed here: {BACKENDS[name].requirement}")
    return name


@pytest.fixture(params=[name for name in BACKENDS if name != REFERENCE_BACKEND])
def other(request):
    """Each backend but the reference."""
    return installed(request.param)


def run_both(make_model, make_input, other, eval_mode=True):
    """The model's output on the reference backend and on ``other``, from the same weights and a fresh
    copy of the input."""
    torch.manual_seed(0)
    model = make_model()
    model.eval() if eval_mode else model.train()
    outputs = {}
    for backend in (REFERENCE_BACKEND, other):
        set_backend(model, backend)
        outputs[backend] = model(make_input())
    return outputs[REFERENCE_BACKEND], outputs[other]


def assert_same(ours, theirs, rtol=1e-5):
    assert torch.equal(ours.coords, theirs.coords), "coordinates or their order differ"
    assert ours.spatial_shape == theirs.spatial_shape and ours.tensor_stride == theirs.tensor_stride
    ours, theirs = ours.features.detach(), theirs.features.detach()
    assert float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12)) <= rtol


def fresh(x):
    return SparseTensor(x.features.float(), x.coords, x.spatial_shape, x.batch_size)


@pytest.mark.parametrize("make_layer", [
    lambda: SubMConv3d(3, 8, 3, bias=True, indice_key="a"),
    lambda: SubMConv3d(3, 8, (3, 1, 1), bias=False),
    lambda: SubMConv3d(3, 8, 3, dilation=2, bias=False),
    lambda: SparseConv3d(3, 8, 3, stride=2, padding=1, bias=True),
    lambda: SparseConv3d(3, 8, 3, stride=1, padding=1, bias=False),
    lambda: SparseConv3d(3, 8, 2, stride=2, padding=0, bias=False),
    lambda: SparseConv3d(3, 8, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False),
    lambda: SparseConv3d(3, 8, 3, stride=2, padding=(0, 1, 1), dilation=2, bias=False),
], ids=["subm3", "subm311", "subm3-dil2", "reg3s2p1", "reg3s1p1", "reg2s2", "reg311s211", "reg3s2-dil2"])
@pytest.mark.parametrize("eval_mode", [True, False], ids=["eval", "train"])
def test_layer_matches_spconv(make_layer, eval_mode, other):
    x = random_sparse(SHAPE, num_sites=400, channels=3, seed=1)
    ours, theirs = run_both(make_layer, lambda: fresh(x), other, eval_mode)
    assert_same(ours, theirs)


def test_inverse_matches_spconv(other):
    x = random_sparse(SHAPE, num_sites=400, channels=3, seed=2)
    model = lambda: SparseSequential(SparseConv3d(3, 8, 3, stride=2, padding=1, indice_key="down"),  # noqa: E731
                                     SubMConv3d(8, 8, 3, indice_key="subm"),
                                     SparseInverseConv3d(8, 4, 3, indice_key="down"))
    ours, theirs = run_both(model, lambda: fresh(x), other)
    assert torch.equal(ours.coords, x.coords)
    assert_same(ours, theirs)


def test_gradients_match_spconv(other):
    x = random_sparse(SHAPE, num_sites=300, channels=3, seed=3)
    grads = {}
    for backend in (REFERENCE_BACKEND, other):
        torch.manual_seed(0)
        model = SparseSequential(SubMConv3d(3, 8, 3, indice_key="s"), torch.nn.ReLU(),
                                 SparseConv3d(8, 4, 3, stride=2, padding=1, indice_key="d"))
        set_backend(model, backend)
        features = x.features.float().clone().requires_grad_(True)
        out = model(SparseTensor(features, x.coords, SHAPE, x.batch_size))
        (out.features * torch.linspace(-1, 1, out.features.numel()).view_as(out.features)).sum().backward()
        grads[backend] = [features.grad] + [p.grad for p in model.parameters()]
    for ours, theirs in zip(grads[REFERENCE_BACKEND], grads[other]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_backbone_matches_spconv_on_random_input(other):
    x = random_sparse((40, 64, 64), batch_size=2, num_sites=3000, channels=4, seed=4)
    ours, theirs = run_both(lambda: VoxelResBackBone8x(4, channels=(8, 16, 16, 32), out_channels=32),
                            lambda: fresh(x), other)
    for name in ("x_conv1", "x_conv2", "x_conv3", "x_conv4", "out"):
        assert_same(getattr(ours, name), getattr(theirs, name))


@pytest.mark.parametrize("scan, preset", [(KITTI_SCANS[0], "kitti"), (NUSCENES_KEYFRAME, "nuscenes")])
def test_backbone_matches_spconv_on_real_scans(real_file, scan, preset, other):
    voxels, _ = preset_voxelizer(preset).batch([read_points(str(real_file(scan)))])
    ours, theirs = run_both(lambda: VoxelResBackBone8x(voxels.num_channels), lambda: fresh(voxels), other)
    for name in ("x_conv2", "x_conv4", "out"):
        assert_same(getattr(ours, name), getattr(theirs, name))


def test_state_dict_saved_on_one_backend_loads_into_the_other(tmp_path, other):
    x = random_sparse((40, 32, 32), num_sites=800, channels=4, seed=5)
    torch.manual_seed(0)
    trained = VoxelResBackBone8x(4, channels=(8, 8, 16, 16), out_channels=16, backend="torch").eval()
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    torch.manual_seed(1)  # different initial weights
    loaded = VoxelResBackBone8x(4, channels=(8, 8, 16, 16), out_channels=16, backend=other).eval()
    loaded.load_state_dict(torch.load(tmp_path / "weights.pt"))
    assert_same(trained(fresh(x)).out, loaded(fresh(x)).out)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_edge_cases(backend):
    installed(backend)
    model = SparseSequential(SubMConv3d(2, 4, 3, indice_key="s"),
                             SparseConv3d(4, 4, 3, stride=2, padding=1, indice_key="d"),
                             SparseInverseConv3d(4, 3, 3, indice_key="d"))
    set_backend(model, backend)
    empty = SparseTensor(torch.zeros((0, 2)), torch.zeros((0, 4), dtype=torch.int32), SHAPE, 2)
    out = model(empty)
    assert out.num_sites == 0 and out.num_channels == 3 and out.spatial_shape == SHAPE
    # One voxel on the grid's far corner: the regular conv's outputs are the sites that can see it.
    corner = torch.tensor([[1, SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1]], dtype=torch.int32)
    one = SparseTensor(torch.ones((1, 2)), corner, SHAPE, 2)
    down = model[1](model[0](one))
    assert down.num_sites == 1 and down.coords.tolist() == [[1, 4, 9, 10]]
    assert model(one).coords.tolist() == corner.tolist()
    # A batch with an empty sample keeps it empty.
    x = random_sparse(SHAPE, batch_size=3, num_sites=200, channels=2, seed=6, dtype=torch.float32)
    keep = x.coords[:, 0] != 1
    out = model(SparseTensor(x.features[keep], x.coords[keep], SHAPE, 3))
    assert out.sites_per_sample().tolist()[1] == 0


def test_border_sites_match_on_both_backends(other):
    x = random_sparse(SHAPE, num_sites=300, channels=3, seed=7, border=True)
    ours, theirs = run_both(lambda: SparseSequential(SubMConv3d(3, 4, 3), SparseConv3d(4, 4, 3, stride=2, padding=1)),
                            lambda: fresh(x), other)
    assert_same(ours, theirs)


def test_submanifold_layers_share_one_kernel_map_per_key_and_resolution():
    x = fresh(random_sparse(SHAPE, num_sites=300, channels=3, seed=8))
    first, second, other = SubMConv3d(3, 3, 3, indice_key="k"), SubMConv3d(3, 3, 3, indice_key="k"), \
        SubMConv3d(3, 3, 3, indice_key="other")
    y = second(first(x))
    assert first.kernel_map(x) is second.kernel_map(y)
    assert other.kernel_map(y) is not first.kernel_map(x)
    with pytest.raises(ValueError, match="same kernel"):
        SubMConv3d(3, 3, (3, 1, 1), indice_key="k")(y)


def test_deterministic_on_cpu():
    x = random_sparse(SHAPE, num_sites=500, channels=3, seed=9, dtype=torch.float32)
    torch.manual_seed(0)
    model = SparseSequential(SubMConv3d(3, 8, 3), SparseConv3d(8, 8, 3, stride=2, padding=1))
    a, b = model(fresh(x)), model(fresh(x))
    assert torch.equal(a.features, b.features)


def test_bf16_autocast_runs_close_to_fp32():
    x = fresh(random_sparse(SHAPE, num_sites=500, channels=8, seed=10))
    torch.manual_seed(0)
    layer = SubMConv3d(8, 16, 3)
    reference = layer(x).features
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.features.dtype == torch.bfloat16
    torch.testing.assert_close(out.features.float(), reference, rtol=3e-2, atol=3e-2)
    out.features.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown sparse conv backend"):
        set_backend(SubMConv3d(2, 2, 3), "cuda-magic")
    with pytest.raises(ValueError, match="stride 1"):
        SubMConv3d(2, 2, 3, stride=2)
    with pytest.raises(ValueError, match="expects 4 input channels, got 3"):
        SubMConv3d(4, 2, 3)(fresh(random_sparse(SHAPE, channels=3)))
    with pytest.raises(ValueError, match="no regular conv with indice_key 'missing'"):
        SparseInverseConv3d(3, 2, 3, indice_key="missing")(fresh(random_sparse(SHAPE, channels=3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu():
    x = random_sparse(SHAPE, num_sites=400, channels=3, seed=11, dtype=torch.float32)
    torch.manual_seed(0)
    model = SparseSequential(SubMConv3d(3, 8, 3, indice_key="s"), SparseConv3d(8, 8, 3, stride=2, padding=1))
    cpu = model(fresh(x))
    gpu = model.cuda()(SparseTensor(x.features.cuda(), x.coords.cuda(), SHAPE, x.batch_size))
    assert torch.equal(cpu.coords, gpu.coords.cpu())
    torch.testing.assert_close(cpu.features, gpu.features.cpu(), rtol=1e-4, atol=1e-5)
