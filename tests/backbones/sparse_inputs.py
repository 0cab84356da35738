"""Random sparse inputs shared by the backbone tests."""
import torch

from voxelize import SparseTensor


def random_sparse(spatial_shape, batch_size=2, num_sites=60, channels=3, seed=0, dtype=torch.float64,
                  border=False) -> SparseTensor:
    """Unique random sites (optionally forced onto the grid's faces) with random features."""
    g = torch.Generator().manual_seed(seed)
    depth, height, width = spatial_shape
    volume = depth * height * width
    keys = torch.randperm(batch_size * volume, generator=g)[:num_sites]
    coords = torch.stack([keys // volume, keys // (height * width) % depth, keys // width % height, keys % width],
                         dim=1).to(torch.int32)
    if border:  # push every site onto one of the six faces
        axis = torch.randint(1, 4, (num_sites,), generator=g)
        high = torch.randint(0, 2, (num_sites,), generator=g).bool()
        extent = torch.tensor([batch_size, depth, height, width])
        rows = torch.arange(num_sites)
        coords[rows, axis] = torch.where(high, extent[axis] - 1, 0).to(torch.int32)
        coords = torch.unique(coords, dim=0)
    features = torch.randn((coords.shape[0], channels), generator=g, dtype=dtype)
    return SparseTensor(features, coords, spatial_shape, batch_size)
