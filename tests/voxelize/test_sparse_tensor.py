"""SparseTensor: validation, dense round trips, sharing of the hash map, spconv conversion."""
import pytest
import torch

from voxelize import SparseTensor

SHAPE = (4, 6, 8)


def random_tensor(n=40, channels=3, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randperm(batch * SHAPE[0] * SHAPE[1] * SHAPE[2], generator=g)[:n]
    coords = torch.stack([keys // (SHAPE[0] * SHAPE[1] * SHAPE[2]), keys // (SHAPE[1] * SHAPE[2]) % SHAPE[0],
                          keys // SHAPE[2] % SHAPE[1], keys % SHAPE[2]], dim=1).to(torch.int32)
    return SparseTensor(torch.randn((n, channels), generator=g), coords, SHAPE, batch)


def test_dense_puts_every_feature_at_its_site():
    tensor = random_tensor()
    dense = tensor.dense()
    assert dense.shape == (2, 3, *SHAPE)
    expected = torch.zeros_like(dense)
    for (b, z, y, x), f in zip(tensor.coords.tolist(), tensor.features):
        expected[b, :, z, y, x] = f
    assert torch.equal(dense, expected)
    assert torch.equal(tensor.dense(channels_first=False), expected.permute(0, 2, 3, 4, 1))


def test_from_dense_round_trip():
    tensor = random_tensor()
    again = SparseTensor.from_dense(tensor.dense())
    assert torch.equal(again.dense(), tensor.dense())
    assert torch.equal(again.keys(), torch.sort(tensor.keys()).values)  # canonical order


def test_hash_map_is_built_lazily_and_shared_with_replaced_features():
    tensor = random_tensor()
    unchecked = SparseTensor(tensor.features, tensor.coords, SHAPE, 2, check=False)
    assert unchecked._hash_map is None
    rows = unchecked.hash_map.query(tensor.coords)
    assert torch.equal(rows, torch.arange(tensor.num_sites))
    replaced = unchecked.replace_features(tensor.features * 2)
    assert replaced.hash_map is unchecked.hash_map
    assert replaced.kernel_map_cache is unchecked.kernel_map_cache
    assert torch.equal(replaced.coords, unchecked.coords)


def test_replace_features_checks_row_count():
    tensor = random_tensor()
    with pytest.raises(ValueError, match=r"\(40, C\)"):
        tensor.replace_features(torch.zeros(39, 3))


def test_sites_per_sample_counts_empty_samples():
    tensor = random_tensor(batch=3)
    mask = tensor.coords[:, 0] != 1
    sparse = SparseTensor(tensor.features[mask], tensor.coords[mask], SHAPE, 3)
    assert sparse.sites_per_sample().tolist()[1] == 0
    assert sparse.sites_per_sample().sum() == sparse.num_sites


def test_empty_tensor_is_valid():
    empty = SparseTensor(torch.zeros((0, 5)), torch.zeros((0, 4), dtype=torch.int32), SHAPE, 2)
    assert empty.dense().shape == (2, 5, *SHAPE) and not empty.dense().any()
    assert empty.hash_map.query(torch.zeros((1, 4), dtype=torch.int32)).tolist() == [-1]


@pytest.mark.parametrize("features, coords, batch, message", [
    (torch.zeros((2, 3)), torch.zeros((2, 4), dtype=torch.int64), 1, "int32"),
    (torch.zeros((2, 3)), torch.zeros((2, 3), dtype=torch.int32), 1, r"\(N, 4\)"),
    (torch.zeros(2), torch.zeros((2, 4), dtype=torch.int32), 1, r"\(N, C\)"),
    (torch.zeros((2, 3), dtype=torch.int64), torch.zeros((2, 4), dtype=torch.int32), 1, "floating"),
    (torch.zeros((3, 3)), torch.zeros((2, 4), dtype=torch.int32), 1, "3 rows but coords have 2"),
    (torch.zeros((1, 3)), torch.tensor([[0, 4, 0, 0]], dtype=torch.int32), 1, "outside"),
    (torch.zeros((1, 3)), torch.tensor([[1, 0, 0, 0]], dtype=torch.int32), 1, "outside"),
    (torch.zeros((2, 3)), torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]], dtype=torch.int32), 1, "duplicate"),
    (torch.zeros((1, 3)), torch.zeros((1, 4), dtype=torch.int32), 0, "batch_size"),
])
def test_invalid_construction_raises(features, coords, batch, message):
    with pytest.raises(ValueError, match=message):
        SparseTensor(features, coords, SHAPE, batch)


def test_spconv_round_trip_preserves_dense_grid():
    tensor = random_tensor()
    spconv_tensor = tensor.to_spconv()
    assert torch.equal(spconv_tensor.dense(), tensor.dense())
    back = SparseTensor.from_spconv(spconv_tensor)
    assert torch.equal(back.features, tensor.features) and torch.equal(back.coords, tensor.coords)
    assert back.spatial_shape == SHAPE and back.batch_size == 2
