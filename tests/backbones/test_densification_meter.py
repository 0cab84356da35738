"""The densification meter against independent counts (numpy, Python sets), both backends; the
activation measures against their formulas; the exact-sparsity controls."""
import json
import math

import numpy as np
import pytest
import torch

from backbones import SparseConv3d, SparseConvolution, SubMConv3d, VoxelBackBone8x, VoxelResBackBone8x, set_backend
from backbones.activation_sparsity import (KWinnersTakeAll, SiteTopK, activation_ratio, activation_statistics,
                                           hoyer_sparsity, hoyer_square_penalty, l1_activation_penalty)
from backbones.backends import BACKENDS, REFERENCE_BACKEND
from backbones.densification_meter import compare_conv_types, measure, plot_reports
from conftest import KITTI_SCANS
from datasets import read_points
from sparse_inputs import random_sparse
from voxelize import SparseTensor
from voxelize.presets import preset_voxelizer

GRID = (40, 32, 32)


def small_cloud(seed=0, batch=2, sites=700):
    x = random_sparse(GRID, batch_size=batch, num_sites=sites, channels=4, seed=seed, dtype=torch.float32)
    return SparseTensor(x.features, x.coords, GRID, batch)


def independent_counts(coords: np.ndarray, spatial_shape, layer: SparseConvolution):
    """(output sites, pairs) of a layer from numpy and a Python set, nothing of the project's."""
    sites = {tuple(c) for c in coords.tolist()}
    kernel, dilation = np.array(layer.kernel_size), np.array(layer.dilation)
    offsets = np.array(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij")).reshape(3, -1).T
    if layer.kind == "subm":
        centred = (offsets - kernel // 2) * dilation
        pairs = sum((b, z + dz, y + dy, x + dx) in sites for b, z, y, x in coords.tolist() for dz, dy, dx in centred)
        return len(sites), pairs
    stride, padding = np.array(layer.stride), np.array(layer.padding)
    out_shape = (np.array(spatial_shape) + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    numerator = coords[:, None, 1:] + padding - offsets[None] * dilation  # (N, K, 3)
    out = numerator // stride
    valid = ((numerator % stride) == 0).all(2) & (out >= 0).all(2) & (out < out_shape).all(2)
    batch = np.broadcast_to(coords[:, None, :1], (*valid.shape, 1))
    outputs = np.concatenate([batch, out], axis=2)[valid]
    return len(np.unique(outputs, axis=0)), int(valid.sum())


def layer_inputs(model, x):
    """Each sparse conv's input (coords, shape), in call order, captured by hooks of our own."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((m, i[0].coords.numpy(), i[0].spatial_shape)))
             for m in model.modules() if isinstance(m, SparseConvolution)]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("conv_type", ["subm", "regular"])
def test_sites_pairs_and_macs_match_independent_counts(conv_type):
    torch.manual_seed(0)
    model = VoxelBackBone8x(4, channels=(4, 4, 8, 8), out_channels=8, conv_type=conv_type).eval()
    x = small_cloud(sites=300)
    report = measure(model, x)
    inputs = layer_inputs(model, small_cloud(sites=300))
    assert len(report.layers) == len(inputs) == 12
    for record, (layer, coords, shape) in zip(report.layers, inputs):
        sites, pairs = independent_counts(coords, shape, layer)
        assert record.sites_out == sites, record.name
        assert record.pairs == pairs, record.name
        assert record.macs == pairs * layer.in_channels * layer.out_channels
        assert sum(s.pairs for s in record.samples) == record.pairs
        assert sum(s.sites_out for s in record.samples) == record.sites_out
        if record.kind == "subm":
            assert record.growth == 1.0
        assert record.dense_macs == 2 * math.prod(record.spatial_shape) * math.prod(layer.kernel_size) * \
            layer.in_channels * layer.out_channels


def test_regular_counts_on_a_real_scan(real_file):
    voxels, _ = preset_voxelizer("kitti").batch([read_points(str(real_file(KITTI_SCANS[1])))])
    keep = voxels.coords[:, 1:].amin(1) >= 0
    x = SparseTensor(voxels.features[keep][:3000], voxels.coords[keep][:3000], voxels.spatial_shape, 1)
    torch.manual_seed(0)
    model = VoxelBackBone8x(4, channels=(4, 4, 4, 4), out_channels=4, conv_type="regular").eval()
    report = measure(model, x)
    for record, (layer, coords, shape) in zip(report.layers[:2], layer_inputs(model, x)[:2]):
        assert (record.sites_out, record.pairs) == independent_counts(coords, shape, layer)


@pytest.mark.parametrize("other", [name for name in BACKENDS if name != REFERENCE_BACKEND])
@pytest.mark.parametrize("batch", [1, 2])  # one sample: spconv's own (mirrored) counts; two: our maps
def test_both_backends_read_the_same(batch, other):
    if not BACKENDS[other].available():
        pytest.skip(f"backend {other!r} is not installed here: {BACKENDS[other].requirement}")
    torch.manual_seed(0)
    model = VoxelResBackBone8x(4, channels=(4, 4, 8, 8), out_channels=8).eval()
    reports = {}
    for backend in (REFERENCE_BACKEND, other):
        set_backend(model, backend)
        reports[backend] = measure(model, small_cloud(batch=batch))
    for ours, theirs in zip(reports[REFERENCE_BACKEND].layers, reports[other].layers):
        assert (ours.name, ours.sites_in, ours.sites_out, ours.pairs, ours.macs) == \
            (theirs.name, theirs.sites_in, theirs.sites_out, theirs.pairs, theirs.macs)
        assert ours.active_ratio == pytest.approx(theirs.active_ratio, abs=1e-4)
        assert ours.hoyer == pytest.approx(theirs.hoyer, abs=1e-4)
        # Float differences between the backends could flip an exact zero; with this input none does.
        assert (ours.skippable_macs, ours.zero_input_macs) == (theirs.skippable_macs, theirs.zero_input_macs)
        assert ours.channel_zero_fraction == pytest.approx(theirs.channel_zero_fraction, abs=1e-4)
        assert [(s.skippable_macs, s.zero_input_macs) for s in ours.samples] == \
            [(s.skippable_macs, s.zero_input_macs) for s in theirs.samples]
    assert sum(layer.skippable_macs for layer in reports[REFERENCE_BACKEND].layers) > 0  # ReLU left all-zero rows to count


def test_activation_measures_follow_their_formulas():
    values = np.array([[0.0, 2.0, -1.0], [0.0, 0.0, 3.0]])
    x = torch.tensor(values)
    n = values.size
    l1, l2 = np.abs(values).sum(), np.sqrt((values ** 2).sum())
    assert activation_ratio(x) == pytest.approx(np.count_nonzero(values) / n)
    assert hoyer_sparsity(x) == pytest.approx((np.sqrt(n) - l1 / l2) / (np.sqrt(n) - 1))
    assert hoyer_sparsity(torch.tensor([0.0, 5.0, 0.0])) == pytest.approx(1.0)
    assert hoyer_sparsity(torch.ones(8)) == pytest.approx(0.0, abs=1e-6)
    assert hoyer_sparsity(torch.zeros(4)) is None and activation_ratio(torch.zeros(0)) is None
    # The meter's fused version gives the same numbers, with or without the non-negative shortcut.
    assert activation_statistics(x) == pytest.approx((activation_ratio(x), hoyer_sparsity(x)))
    relu = torch.relu(torch.randn(500, 7, dtype=torch.float64))
    expected = (np.count_nonzero(relu.numpy()) / relu.numel(),
                (np.sqrt(relu.numel()) - relu.numpy().sum() / np.sqrt((relu.numpy() ** 2).sum()))
                / (np.sqrt(relu.numel()) - 1))
    assert activation_statistics(relu, non_negative=True) == pytest.approx(expected)


def test_nonzero_counts_stay_exact_beyond_float32_integers():
    ones = (1 << 24) + 3   # float32 cannot count past 2**24 one by one
    x = torch.zeros(ones + 5)
    x[:ones] = 1e-30        # tiny but non-zero
    assert activation_statistics(x, non_negative=True)[0] == ones / x.numel()
    x[7] = float("nan")     # counted as non-zero, as torch.count_nonzero does
    assert activation_ratio(x) == ones / x.numel()


def test_meter_records_the_activation_after_each_conv():
    torch.manual_seed(0)
    model = VoxelResBackBone8x(4, channels=(8, 8, 16, 16), out_channels=16).eval()
    x = small_cloud()
    after_relu = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(lambda m, i, o, name=name: after_relu.setdefault(name, []).append(o.clone()))
    report = measure(model, x)
    first = report.layers[0]  # conv_input: conv → BN → ReLU (conv_input.2)
    activation = after_relu["conv_input.2"][0]
    assert first.active_ratio == pytest.approx(float((activation != 0).float().mean()))
    assert first.hoyer == pytest.approx(hoyer_sparsity(activation))
    batch = x.coords[:, 0]
    for b, sample in enumerate(first.samples):
        assert sample.active_ratio == pytest.approx(activation_ratio(activation[batch == b]))
    assert all(layer.active_ratio is not None for layer in report.layers)


def test_report_formats(tmp_path):
    torch.manual_seed(0)
    reports = compare_conv_types("VoxelBackBone8x", small_cloud(sites=200), channels=(4, 4, 4, 4), out_channels=4,
                                 prune_topk=50)
    assert [r.label for r in reports] == ["ssc", "regular", "regular + top-50 sites"]
    ssc, regular, pruned = reports
    assert regular.total_macs > ssc.total_macs
    assert all(layer.sites_in <= 2 * 50 for layer in pruned.layers[1:])  # every block output was pruned
    parsed = json.loads(ssc.to_json())
    assert parsed["layers"][0]["name"] == ssc.layers[0].name and parsed["total_macs"] == ssc.total_macs
    csv = ssc.to_csv().splitlines()
    assert csv[0].startswith("name,kind") and len(csv) == len(ssc.layers) + 1
    assert "conv_input.0" in ssc.table()
    plot_reports(reports, str(tmp_path / "densify.png"))
    assert (tmp_path / "densify.png").read_bytes()[:4] == b"\x89PNG"


def test_k_winners_take_all_keeps_exactly_k_largest():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    out = KWinnersTakeAll(3)(features)
    assert ((out != 0).sum(1) == 3).all()
    kept = out != 0
    assert torch.equal(out[kept], features[kept])
    threshold = features.topk(3, dim=1).values[:, -1:]
    assert torch.equal(kept, features >= threshold)
    with pytest.raises(ValueError, match="k=20 on 16 channels"):
        KWinnersTakeAll(20)(features)


@pytest.mark.parametrize("kwargs", [dict(k=40), dict(fraction=0.25)])
def test_site_top_k_keeps_the_highest_magnitude_sites_per_sample(kwargs):
    x = small_cloud(batch=3, sites=600)
    pruned = SiteTopK(**kwargs)(x)
    norms = torch.linalg.vector_norm(x.features, dim=1)
    for b in range(3):
        rows = (x.coords[:, 0] == b).nonzero().squeeze(1)
        k = kwargs.get("k") or math.ceil(len(rows) * kwargs["fraction"])
        expected = rows[norms[rows].argsort(descending=True)[:k]]
        kept = (pruned.coords[:, 0] == b)
        assert int(kept.sum()) == k
        assert set(map(tuple, pruned.coords[kept].tolist())) == set(map(tuple, x.coords[expected].tolist()))
    rows = x.hash_map.query(pruned.coords)
    assert bool((rows[1:] > rows[:-1]).all())  # the kept sites keep their order
    SparseTensor(pruned.features, pruned.coords, GRID, 3)  # valid tensor


def test_penalties():
    a = torch.tensor([[3.0, 0.0], [0.0, -4.0]], requires_grad=True)
    assert float(l1_activation_penalty([a]).detach()) == pytest.approx(7 / 4)
    assert float(hoyer_square_penalty([a]).detach()) == pytest.approx(49 / 25)
    hoyer_square_penalty([a]).backward()
    assert a.grad is not None
    assert float(hoyer_square_penalty([torch.tensor([0.0, 2.0, 0.0])])) == pytest.approx(1.0)


def test_pruning_and_kwta_from_backbone_options():
    torch.manual_seed(0)
    model = VoxelResBackBone8x(4, channels=(8, 8, 16, 16), out_channels=16, conv_type="regular",
                               site_pruning={"k": 100}, activation_topk=2).eval()
    report = measure(model, small_cloud())
    block_inputs = [layer for layer in report.layers[1:] if layer.name.endswith((".conv1", ".0.0"))]
    assert len(block_inputs) == 11 and all(layer.sites_in <= 2 * 100 for layer in block_inputs)
    assert all(layer.active_ratio <= 2 / layer.channels_out + 1e-9 for layer in report.layers)
    with pytest.raises(ValueError, match="exactly one of k and fraction"):
        VoxelResBackBone8x(4, site_pruning={})


def pairs_per_input(coords: np.ndarray, spatial_shape, layer: SparseConvolution) -> np.ndarray:
    """(N,) kernel-map pairs each input site takes part in, from numpy and a Python set."""
    sites = {tuple(c) for c in coords.tolist()}
    kernel = np.array(layer.kernel_size)
    offsets = np.array(np.meshgrid(*[np.arange(k) for k in kernel], indexing="ij")).reshape(3, -1).T
    if layer.kind == "subm":  # input i feeds output i - d for each centred offset d that lands on a site
        centred = offsets - kernel // 2
        return np.array([sum((b, z - dz, y - dy, x - dx) in sites for dz, dy, dx in centred)
                         for b, z, y, x in coords.tolist()])
    stride, padding = np.array(layer.stride), np.array(layer.padding)
    out_shape = (np.array(spatial_shape) + 2 * padding - (kernel - 1) - 1) // stride + 1
    numerator = coords[:, None, 1:] + padding - offsets[None]
    out = numerator // stride
    return (((numerator % stride) == 0).all(2) & (out >= 0).all(2) & (out < out_shape).all(2)).sum(1)


@pytest.mark.parametrize("backend", ["torch", "spconv"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kind", ["subm", "regular"])
def test_skippable_macs_match_a_numpy_count_with_planted_zero_rows(kind, batch, backend):
    torch.manual_seed(0)
    layer = SubMConv3d(4, 6, 3, bias=False, indice_key="k") if kind == "subm" else \
        SparseConv3d(4, 6, 3, stride=2, padding=1, bias=False)
    set_backend(layer, backend)
    x = small_cloud(batch=batch, sites=400)
    features = x.features.clone()
    g = torch.Generator().manual_seed(1)
    zero_rows = torch.randperm(x.num_sites, generator=g)[:90]
    features[zero_rows] = 0.0                               # whole rows at zero: skippable
    features[torch.randperm(x.num_sites, generator=g)[:70], 2] = 0.0  # single zeros: skippable elements only
    x = x.replace_features(features)
    report = measure(layer.eval(), x)
    record = report.layers[0]

    coords, values = x.coords.numpy(), features.numpy()
    pairs = pairs_per_input(coords, GRID, layer)
    zeros = (values == 0).sum(1)
    all_zero = zeros == 4
    assert all_zero.sum() == 90 and pairs[all_zero].sum() > 0
    assert record.pairs == pairs.sum()
    assert record.skippable_macs == int(pairs[all_zero].sum()) * 4 * 6
    assert record.zero_input_macs == int((pairs * zeros).sum()) * 6
    assert record.zero_input_macs > record.skippable_macs // 4  # single zeros counted too
    for b, sample in enumerate(record.samples):
        mine = coords[:, 0] == b
        assert sample.skippable_macs == int(pairs[mine & all_zero].sum()) * 4 * 6
        assert sample.zero_input_macs == int((pairs * zeros)[mine].sum()) * 6
    assert report.total_skippable_macs == record.skippable_macs


def test_no_zeros_nothing_skippable_and_the_channel_zero_fraction():
    torch.manual_seed(0)
    model = VoxelBackBone8x(4, channels=(4, 4, 8, 8), out_channels=8).eval()
    captured = []
    relu = model.conv_input[2]
    relu.register_forward_hook(lambda m, i, o: captured.append(o.clone()))
    report = measure(model, small_cloud(sites=300))
    first = report.layers[0]
    assert first.skippable_macs == first.zero_input_macs == 0  # random voxel features have no zeros
    activation = captured[0].numpy()
    expected = (activation == 0).mean(0)
    assert first.channel_zero_fraction == pytest.approx(expected.tolist())
    assert np.mean(first.channel_zero_fraction) == pytest.approx(1 - first.active_ratio)
    assert first.dead_channels == int((expected == 1).sum())
    second = report.layers[1]  # its input is the first layer's output after the ReLU
    assert second.zero_input_macs > 0
    parsed = json.loads(report.to_json())
    assert parsed["total_skippable_macs"] == report.total_skippable_macs
    assert parsed["layers"][0]["channel_zero_fraction"] == first.channel_zero_fraction
    header, row = report.to_csv().splitlines()[:2]
    assert "skippable_macs" in header.split(",") and "channel_zero_fraction" in header.split(",")
    assert len(row.split(",")[header.split(",").index("channel_zero_fraction")].split()) == 4
    assert "skip GMAC" in report.table()
