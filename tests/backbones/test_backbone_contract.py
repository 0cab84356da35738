"""The contract of every registered 3D backbone: what it declares (channels, output stride, output shape)
agrees with a real forward, for both conv types, and its weights load into every backend."""
import pytest
import torch

from backbones import BACKBONES, set_backend
from backbones.backends import REFERENCE_BACKEND, available_backends
from backbones.voxel_backbones import CONV_TYPES
from sparse_inputs import random_sparse
from voxelize import SparseTensor

GRIDS = [(40, 48, 48), (41, 37, 50), (24, 64, 24)]  # nuScenes' height, odd sizes, the flattest that works


def cloud(grid, channels, seed=0):
    x = random_sparse(grid, batch_size=2, num_sites=800, channels=channels, seed=seed, dtype=torch.float32)
    return SparseTensor(x.features, x.coords, grid, 2)


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("conv_type", CONV_TYPES)
def test_declared_geometry_equals_a_forward(name, conv_type):
    model = BACKBONES[name](4, channels=(4, 8, 8, 8), out_channels=12, conv_type=conv_type).eval()
    assert model.in_channels == 4 and model.out_channels == 12
    for grid in GRIDS if conv_type == "subm" else GRIDS[1:2]:  # the regular network densifies: one grid
        with torch.no_grad():
            out = model(cloud(grid, 4)).out
        assert model.output_shape(grid) == tuple(out.spatial_shape), grid
        assert model.output_stride == tuple(out.tensor_stride)
        assert out.num_channels == model.out_channels


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_a_grid_too_flat_is_refused_by_output_shape_as_by_forward(name):
    model = BACKBONES[name](4, channels=(4, 8, 8, 8), out_channels=8).eval()
    with pytest.raises(ValueError, match="leaves no output"):
        model.output_shape((10, 64, 24))
    with pytest.raises(ValueError, match="leaves no output"), torch.no_grad():
        model(cloud((10, 64, 24), 4))


def test_output_shape_walks_the_convs_it_has():
    """A backbone whose last conv strides z by 1 instead of 2 reports the deeper output it really gives."""
    model = BACKBONES["VoxelBackBone8x"](4, channels=(4, 8, 8, 8), out_channels=8).eval()
    model.conv_out[0].stride = (1, 1, 1)
    with torch.no_grad():
        out = model(cloud((40, 48, 48), 4)).out
    assert model.output_shape((40, 48, 48)) == tuple(out.spatial_shape) == (3, 6, 6)
    assert model.output_stride == (8, 8, 8)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_state_dict_loads_across_backends(name):
    x = cloud((40, 48, 48), 4, seed=3)
    outputs = {}
    reference = BACKBONES[name](4, channels=(4, 8, 8, 8), out_channels=8).eval()
    for backend in available_backends():
        model = BACKBONES[name](4, channels=(4, 8, 8, 8), out_channels=8, backend=backend).eval()
        model.load_state_dict(reference.state_dict())
        with torch.no_grad():
            outputs[backend] = model(x.fresh_copy()).out
    first = outputs[REFERENCE_BACKEND]
    for backend in available_backends():
        assert torch.equal(outputs[backend].coords, first.coords)
        torch.testing.assert_close(outputs[backend].features, first.features, rtol=1e-5, atol=1e-5)
    set_backend(reference, REFERENCE_BACKEND)
