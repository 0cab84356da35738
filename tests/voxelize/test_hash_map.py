"""CoordHashMap against a Python dict (the oracle): random, adversarial and empty inputs."""
import pytest
import torch

from voxelize import CoordHashMap, pack_keys

SHAPE = (7, 33, 65)
BATCH = 3


def random_coords(n, seed, shape=SHAPE, batch=BATCH):
    g = torch.Generator().manual_seed(seed)
    upper = torch.tensor([batch, *shape])
    return (torch.rand((n, 4), generator=g) * upper).floor().to(torch.int32)


def dict_oracle(coords):
    first = {}
    for row, c in enumerate(coords.tolist()):
        first.setdefault(tuple(c), row)
    return first


def assert_matches_dict(coords, queries):
    hash_map = CoordHashMap(coords, SHAPE, BATCH)
    oracle = dict_oracle(coords)
    expected = torch.tensor([oracle.get(tuple(q), -1) for q in queries.tolist()], dtype=torch.int64)
    assert torch.equal(hash_map.query(queries), expected)
    return hash_map


def test_random_coords_and_absent_queries_match_dict():
    coords = random_coords(3000, seed=0)
    queries = torch.cat([coords, random_coords(3000, seed=1)])
    hash_map = assert_matches_dict(coords, queries)
    assert len(hash_map) == len(dict_oracle(coords))


def test_duplicates_are_detected_and_first_row_wins():
    coords = random_coords(2000, seed=2, shape=(2, 5, 5), batch=1)  # many repeats
    hash_map = CoordHashMap(coords, (2, 5, 5), 1)
    oracle = dict_oracle(coords)
    expected_dups = [row for row, c in enumerate(coords.tolist()) if oracle[tuple(c)] != row]
    assert hash_map.duplicate_rows.tolist() == expected_dups
    assert hash_map.first_rows.tolist() == [oracle[tuple(c)] for c in coords.tolist()]
    assert torch.equal(hash_map.query(coords), hash_map.first_rows)


def test_every_key_in_one_probe_chain():
    # Keys chosen so that all share one home slot: the worst case for linear probing.
    candidates = torch.unique(random_coords(200_000, seed=3), dim=0)
    n = 40
    probe = CoordHashMap(candidates[:n], SHAPE, BATCH)  # same capacity as a map of n keys
    home = probe.home_slot(pack_keys(candidates, SHAPE, BATCH))
    colliding = candidates[home == home[0]][:n]
    assert colliding.shape[0] == n
    hash_map = assert_matches_dict(colliding, torch.cat([colliding, candidates[:500]]))
    assert hash_map.max_probe_length == n


def test_neighbouring_chains_that_run_into_each_other():
    candidates = torch.unique(random_coords(200_000, seed=4), dim=0)
    probe = CoordHashMap(candidates[:64], SHAPE, BATCH)
    home = probe.home_slot(pack_keys(candidates, SHAPE, BATCH))
    picked = torch.cat([candidates[home == s][:8] for s in (5, 6, 7, 9)])
    assert_matches_dict(picked, torch.cat([picked, candidates[:300]]))


def test_grid_corners_and_outside_queries():
    corners = torch.tensor([[b, z, y, x] for b in (0, BATCH - 1) for z in (0, SHAPE[0] - 1)
                            for y in (0, SHAPE[1] - 1) for x in (0, SHAPE[2] - 1)], dtype=torch.int32)
    outside = torch.tensor([[0, -1, 0, 0], [0, 0, SHAPE[1], 0], [BATCH, 0, 0, 0], [0, 0, 0, SHAPE[2]]],
                           dtype=torch.int32)
    assert_matches_dict(corners, torch.cat([corners, outside]))


def test_empty_map_answers_minus_one():
    hash_map = CoordHashMap(torch.zeros((0, 4), dtype=torch.int32), SHAPE, BATCH)
    assert len(hash_map) == 0
    assert hash_map.query(random_coords(10, seed=5)).tolist() == [-1] * 10
    assert hash_map.query(torch.zeros((0, 4), dtype=torch.int32)).numel() == 0


def test_load_factor_bounds_capacity():
    hash_map = CoordHashMap(random_coords(1000, seed=6), SHAPE, BATCH)
    assert hash_map.capacity >= 2 * 1000
    hash_map = CoordHashMap(random_coords(1000, seed=6), SHAPE, BATCH, load_factor=0.25)
    assert hash_map.capacity >= 4 * 1000


@pytest.mark.parametrize("coords, message", [
    (torch.zeros((3, 4), dtype=torch.int64), "int32"),
    (torch.zeros((3, 3), dtype=torch.int32), r"\(N, 4\)"),
    (torch.tensor([[0, 0, 0, SHAPE[2]]], dtype=torch.int32), "outside"),
    (torch.tensor([[BATCH, 0, 0, 0]], dtype=torch.int32), "outside"),
    (torch.tensor([[0, -1, 0, 0]], dtype=torch.int32), "outside"),
])
def test_bad_coords_raise(coords, message):
    with pytest.raises(ValueError, match=message):
        CoordHashMap(coords, SHAPE, BATCH)


def test_grid_too_large_for_int64_keys_raises():
    with pytest.raises(ValueError, match="too large"):
        CoordHashMap(torch.zeros((1, 4), dtype=torch.int32), (2**21, 2**21, 2**21), 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_table_identical_to_cpu():
    coords = random_coords(5000, seed=7)
    cpu = CoordHashMap(coords, SHAPE, BATCH)
    cuda = CoordHashMap(coords.cuda(), SHAPE, BATCH)
    assert torch.equal(cpu.table_keys, cuda.table_keys.cpu())
    assert torch.equal(cpu.table_rows, cuda.table_rows.cpu())
    queries = random_coords(5000, seed=8)
    assert torch.equal(cpu.query(queries), cuda.query(queries.cuda()).cpu())
