"""The assembled CenterPoint detector, built from a config whose geometry is stated once.

points → Voxelizer (mean of each voxel's points) → sparse 3D backbone → height compression →
SECOND-FPN → CenterHead. The grid, the backbone's input shape, the BEV channels and the head's
output grid all derive from ``model.geometry`` (range and voxel size) and the networks' strides.

A config is checked when it is built (at load time): the range must hold a whole number of voxels
per axis, and that grid must pass the 3D backbone's strided convs, the BEV network's levels and the
head so that every head cell covers the same whole number of voxels (:func:`model_shapes`, which asks
the networks for their output shapes); string options are closed sets; numbers have their ranges.
The experiment around the model (dataset, optimizer, training) is ``detectors.experiment``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from torch import nn

from backbones.activation_penalty import ActivationPenalty, ActivationPenaltyConfig
from backbones.backends import BACKENDS, get_backend
from backbones.bev import SECONDFPN, conv2d_output_shape, height_compression
from backbones.sparse_modules import SparseConvolution
from backbones.voxel_backbones import BACKBONES, CONV_TYPES, build_backbone
from detectors.center_head import HEADINGS, CenterHead, DecodeConfig, at_least_one, center_loss, decode
from detectors.center_targets import REGRESSION_CODE, BEVGrid, build_targets
from detectors.config import Bounds, ConfigError, Length, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from detectors.test_time_augmentation import TEST_AUGMENTATIONS, check_symmetric_range, merge_views, views
from voxelize.voxelizer import Voxelizer

# A grid counts as whole when range / voxel size is this close to an integer (in voxels).
WHOLE_GRID_TOLERANCE = 1e-6
INFERENCE_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}  # name -> autocast dtype (None: off)


@dataclass
class GeometryConfig:
    point_cloud_range: Annotated[list[float], Length(6)]     # x0, y0, z0, x1, y1, z1 in metres
    voxel_size: Annotated[list[PositiveFloat], Length(3)]    # vx, vy, vz in metres

    def __post_init__(self):
        low, high = self.point_cloud_range[:3], self.point_cloud_range[3:]
        for axis, (a, b) in enumerate(zip(low, high)):
            if not b > a:
                name = "xyz"[axis]
                raise ConfigError(f"model.geometry.point_cloud_range: {name}1 ({b:g}) must exceed {name}0 ({a:g}), "
                                  f"got {list(self.point_cloud_range)}")


@dataclass
class VoxelizerConfig:
    max_points_per_voxel: PositiveInt = 10
    max_voxels_train: PositiveInt = 90000
    max_voxels_test: PositiveInt = 120000


@dataclass
class SitePruningConfig:
    """Top-k site pruning after regular convs (backbones.activation_sparsity.SiteTopK): exactly one of
    ``k`` (sites kept per sample) and ``fraction`` (share of each sample's sites kept)."""
    k: PositiveInt | None = None
    fraction: Annotated[float, Bounds(0, 1, low_open=True)] | None = None

    def __post_init__(self):
        if (self.k is None) == (self.fraction is None):
            raise ConfigError(f"model.backbone_3d.site_pruning needs exactly one of k and fraction, got "
                              f"k={self.k!r}, fraction={self.fraction!r}")

    def arguments(self) -> dict:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}


@dataclass
class Backbone3DConfig:
    type: Literal[tuple(BACKBONES)] = "VoxelResBackBone8x"
    channels: list[PositiveInt] = field(default_factory=lambda: [16, 32, 64, 128])
    out_channels: PositiveInt = 128
    conv_type: Literal[CONV_TYPES] = "subm"
    backend: Literal[tuple(BACKENDS)] = "torch"
    site_pruning: SitePruningConfig | None = None
    activation_topk: PositiveInt | None = None
    activation_penalty: ActivationPenaltyConfig | None = None  # see backbones/activation_penalty.py


@dataclass
class BEVConfig:
    layer_nums: Annotated[list[NonNegativeInt], Length(at_least=1)] = field(default_factory=lambda: [5, 5])
    layer_strides: list[PositiveInt] = field(default_factory=lambda: [1, 2])
    num_filters: list[PositiveInt] = field(default_factory=lambda: [128, 256])
    upsample_strides: list[PositiveInt] = field(default_factory=lambda: [1, 2])
    upsample_filters: list[PositiveInt] = field(default_factory=lambda: [256, 256])


@dataclass
class HeadConfig:
    class_names: Annotated[list[str], Length(at_least=1)]
    class_groups: Annotated[list[Annotated[list[str], Length(at_least=1)]], Length(at_least=1)]
    code_weights: dict[str, NonNegativeFloat]   # one weight per regression target component, by name
    shared_channels: PositiveInt = 64
    head_channels: PositiveInt = 64
    heatmap_weight: NonNegativeFloat = 1.0
    regression_weight: NonNegativeFloat = 0.25
    heading: Literal[HEADINGS] = "sin_cos"       # how the yaw is encoded: see detectors.center_head.HEADINGS
    direction_weight: NonNegativeFloat = 0.2    # the direction loss's weight (heading 'axis_direction')
    min_overlap: Annotated[float, Bounds(0, 1, low_open=True, high_open=True)] = 0.1
    min_radius: NonNegativeInt = 2
    max_objects: PositiveInt = 500

    def __post_init__(self):
        where = "model.head"
        duplicates = sorted({name for name in self.class_names if self.class_names.count(name) > 1})
        if duplicates or not all(self.class_names):
            raise ConfigError(f"{where}.class_names must be distinct non-empty names, got {self.class_names}")
        grouped = [name for group in self.class_groups for name in group]
        unknown = [name for name in grouped if name not in self.class_names]
        if unknown:
            raise ConfigError(f"{where}.class_groups names {unknown[0]!r}, not in class_names {self.class_names}")
        twice = sorted({name for name in grouped if grouped.count(name) > 1})
        if twice:
            raise ConfigError(f"{where}.class_groups names {twice} in more than one place; each class needs exactly "
                              f"one group")
        ungrouped = [name for name in self.class_names if name not in grouped]
        if ungrouped:
            raise ConfigError(f"{where}.class_groups leaves {ungrouped} of class_names in no group: the head would "
                              f"never detect them; add them to a group or drop them from class_names")
        if self.heading != "axis_direction" and self.direction_weight != HeadConfig.direction_weight:
            raise ConfigError(f"{where}.direction_weight = {self.direction_weight} has no effect with heading "
                              f"{self.heading!r} (no direction branch); set heading: axis_direction or drop it")
        missing = [name for name in REGRESSION_CODE if name not in self.code_weights]
        unknown = sorted(set(self.code_weights) - set(REGRESSION_CODE))
        if missing or unknown:
            raise ConfigError(f"{where}.code_weights must name exactly {list(REGRESSION_CODE)}; missing {missing}, "
                              f"unknown {unknown}")


@dataclass
class ModelConfig:
    """The detector. Constructing it checks that its parts fit together (see :func:`model_shapes`)."""
    geometry: GeometryConfig
    head: HeadConfig
    num_point_features: Annotated[int, Bounds(3)] = 5    # x, y, z and the extra point columns
    voxelizer: VoxelizerConfig = field(default_factory=VoxelizerConfig)
    backbone_3d: Backbone3DConfig = field(default_factory=Backbone3DConfig)
    bev: BEVConfig = field(default_factory=BEVConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    # Precision of predict(): 'fp32', or 'bf16' (autocast: convolutions multiply in bfloat16 and
    # accumulate in fp32; decoding in fp32). Synthetic-val AP within 0.0033 of fp32 per class
    # (docs/benchmarks.md); opt-in, since spconv's CPU kernels and older CPUs without bf16 do not gain.
    inference_precision: Literal[tuple(INFERENCE_PRECISIONS)] = "fp32"
    # predict() on mirrored copies of each cloud, their maps averaged (detectors.test_time_augmentation):
    # 'none', 'half_turn' (2 views) or 'double_flip' (4); the training must have seen the views.
    test_augmentation: Literal[tuple(TEST_AUGMENTATIONS)] = "none"

    def __post_init__(self):
        model_shapes(self)
        asymmetric = check_symmetric_range(self.geometry.point_cloud_range, self.test_augmentation)
        if asymmetric:
            raise ConfigError(asymmetric)
        topk = self.backbone_3d.activation_topk
        widths = [*self.backbone_3d.channels, self.backbone_3d.out_channels]
        if topk is not None and topk > min(widths):
            raise ConfigError(f"model.backbone_3d.activation_topk = {topk} exceeds the narrowest layer "
                              f"({min(widths)} channels of {widths}); it must be <= {min(widths)}")
        groups = len(self.head.class_groups)
        if self.decode.nms == "circle" and len(self.decode.circle_radius) < groups:
            raise ConfigError(f"model.decode.circle_radius needs a radius for each of the {groups} class groups, got "
                              f"{self.decode.circle_radius}")


@dataclass(frozen=True)
class ModelShapes:
    """What the geometry and the networks make of each other.

    grid: the voxel grid (D, H, W); backbone: the 3D backbone's output (D, H, W); bev: the head's
    map (H, W); out_size_factor: voxels per head cell along x and y.
    """
    grid: tuple[int, int, int]
    backbone: tuple[int, int, int]
    bev: tuple[int, int]
    out_size_factor: int


class _ShapeModel:
    """The configured networks, built on the meta device (no memory, no initialisation), for shape arithmetic."""

    # A grid size every plausible product of strides divides, for the networks' nominal xy stride.
    REFERENCE_GRID = 2 ** 12 * 3 ** 6 * 5 ** 4 * 7 ** 3

    def __init__(self, model: ModelConfig):
        backbone, bev = model.backbone_3d, model.bev
        self.answers: dict = {}  # (axis kind, voxels) → fits; the nearest-value search asks many times
        with torch.device("meta"):
            try:
                self.backbone = build_backbone(backbone.type, in_channels=model.num_point_features,
                                               channels=backbone.channels, out_channels=backbone.out_channels)
            except ValueError as error:
                raise ConfigError(f"model.backbone_3d: {error}") from None
            try:
                self.bev = SECONDFPN(backbone.out_channels, **vars(bev))
            except ValueError as error:
                raise ConfigError(f"model.bev: {error}") from None
            self.head = CenterHead(self.bev.out_channels, [["class"]], model.head.shared_channels,
                                   model.head.head_channels)
        reference, _ = self.xy_cells(self.REFERENCE_GRID)
        self.factor = self.REFERENCE_GRID // reference if reference and self.REFERENCE_GRID % reference == 0 else None
        if self.factor is None:
            raise ConfigError(f"model.bev: layer_strides {bev.layer_strides} with upsample_strides "
                              f"{bev.upsample_strides} bring the levels to different sizes on any grid")

    def xy_cells(self, voxels: int) -> tuple[int | None, str]:
        """Head cells along x (or y) for a grid of ``voxels``, or None and why a network cannot take it."""
        try:
            _, height, _ = self.backbone.output_shape((self.REFERENCE_GRID, voxels, voxels))
            shared = conv2d_output_shape(self.head.shared, self.bev.output_shape(height, height))
            cells = {conv2d_output_shape(branch, shared)[0] for group in self.head.groups for branch in group.values()}
        except ValueError as error:
            return None, str(error)
        return (cells.pop(), "") if len(cells) == 1 else (None, f"the head's branches give {sorted(cells)} cells")

    def xy_fits(self, voxels: int) -> bool:
        """Whether a grid of ``voxels`` along x (or y) maps onto whole head cells of ``factor`` voxels."""
        if ("xy", voxels) not in self.answers:
            self.answers["xy", voxels] = voxels >= 1 and voxels % self.factor == 0 and \
                self.xy_cells(voxels)[0] == voxels // self.factor
        return self.answers["xy", voxels]

    def z_fits(self, voxels: int) -> bool:
        """Whether a grid of ``voxels`` along z survives the 3D backbone's downsampling."""
        if ("z", voxels) not in self.answers:
            try:
                self.backbone.output_shape((voxels, self.REFERENCE_GRID, self.REFERENCE_GRID))
                self.answers["z", voxels] = voxels >= 1
            except ValueError:
                self.answers["z", voxels] = False
        return self.answers["z", voxels]


def model_shapes(model: ModelConfig) -> ModelShapes:
    """Check that the geometry gives a whole grid that the backbone, the BEV network and the head
    divide exactly, and return the shapes; ConfigError naming the field, the value and the nearest
    valid values otherwise."""
    geometry = model.geometry
    shapes = _ShapeModel(model)
    counts = []
    for axis in range(3):
        low, high = geometry.point_cloud_range[axis], geometry.point_cloud_range[axis + 3]
        voxels = (high - low) / geometry.voxel_size[axis]
        whole = round(voxels)
        fits = shapes.z_fits if axis == 2 else shapes.xy_fits
        if abs(voxels - whole) > WHOLE_GRID_TOLERANCE:
            problem = f"gives {voxels:.6g} voxels, not a whole number"
        elif not fits(whole):
            problem = _misfit(shapes, axis, whole)
        else:
            counts.append(whole)
            continue
        raise ConfigError(_geometry_error(geometry, axis, problem, fits))
    nx, ny, nz = counts
    return ModelShapes((nz, ny, nx), shapes.backbone.output_shape((nz, ny, nx)),
                       (ny // shapes.factor, nx // shapes.factor), shapes.factor)


def _misfit(shapes: _ShapeModel, axis: int, voxels: int) -> str:
    if axis == 2:
        least = next((n for n in range(1, 4097) if shapes.z_fits(n)), None)
        return (f"gives {voxels} voxels, too few for the 3D backbone's downsampling in z"
                + (f" (at least {least} voxels)" if least else ""))
    valid = [n for n in range(1, 1025) if shapes.xy_fits(n)]
    multiples = valid and all(n % valid[0] == 0 for n in valid) and len(valid) == 1024 // valid[0]
    period = valid[0] if multiples else None
    rule = f" a multiple of {period} voxels" if period else " a grid size the networks divide"
    cells, reason = shapes.xy_cells(voxels)
    seen = f"the networks give {cells} head cells of {shapes.factor} voxels" if cells else reason
    return f"gives {voxels} voxels, but {seen}; the grid must be{rule} (3D backbone x BEV network x head strides)"


def _geometry_error(geometry: GeometryConfig, axis: int, problem: str, fits) -> str:
    name = "xyz"[axis]
    low, high = geometry.point_cloud_range[axis], geometry.point_cloud_range[axis + 3]
    size = geometry.voxel_size[axis]
    extent = high - low
    voxels = extent / size
    below = next((n for n in range(math.ceil(voxels - WHOLE_GRID_TOLERANCE) - 1, 0, -1) if fits(n)), None)
    above = next((n for n in range(math.floor(voxels + WHOLE_GRID_TOLERANCE) + 1, math.floor(voxels) + 4097)
                  if fits(n)), None)
    centre = (low + high) / 2
    ranges = [f"[{_short(centre - n * size / 2)}, {_short(centre + n * size / 2)}]" for n in (below, above) if n]
    step = 0.0005  # suggested voxel sizes are whole half-millimetres
    current = round(size / step)
    sizes = []
    for candidates in (range(current if current * step < size else current - 1, 0, -1),
                       range(current + 1 if current * step <= size else current, current * 4 + 1)):
        for k in candidates:
            count = extent / (k * step)
            if abs(count - round(count)) <= WHOLE_GRID_TOLERANCE and fits(round(count)):
                sizes.append(_short(k * step))
                break
    nearest = []
    if sizes:
        nearest.append(f"voxel_size[{axis}] {' or '.join(sizes)} over this range")
    if ranges:
        nearest.append(f"point_cloud_range {name} {' or '.join(ranges)} at this voxel size")
    return (f"model.geometry: voxel_size[{axis}] = {size:g} m over point_cloud_range {name} [{low:g}, {high:g}] "
            f"({extent:g} m) {problem}. Nearest valid: {'; or '.join(nearest) or 'none near'}")


def _short(value: float) -> str:
    return f"{round(value, 6):g}"


class CenterPoint(nn.Module):
    """CenterPoint from a :class:`ModelConfig`.

    forward(clouds) → head predictions (one dict per class group) for a list of (N, C) clouds.
    loss(predictions, targets) → dict of losses; targets from :meth:`targets` (data pipeline).
    predict(clouds) → per sample {'boxes': (K, 9), 'scores', 'labels'} after decoding and NMS.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        geometry = config.geometry
        head = config.head
        shapes = model_shapes(config)  # ConfigError unless the geometry and the networks fit
        self.voxelizers = {mode: Voxelizer(geometry.voxel_size, geometry.point_cloud_range,
                                           config.voxelizer.max_points_per_voxel, limit)
                           for mode, limit in (("train", config.voxelizer.max_voxels_train),
                                               ("test", config.voxelizer.max_voxels_test))}
        backbone = config.backbone_3d
        pruning = backbone.site_pruning.arguments() if backbone.site_pruning is not None else None
        self.backbone_3d = build_backbone(backbone.type, in_channels=config.num_point_features,
                                          channels=backbone.channels, out_channels=backbone.out_channels,
                                          conv_type=backbone.conv_type, backend=backbone.backend,
                                          site_pruning=pruning, activation_topk=backbone.activation_topk)
        self.activation_penalty = None if backbone.activation_penalty is None \
            else ActivationPenalty(self.backbone_3d, backbone.activation_penalty)
        # What the BEV network and the decoder's grid were sized for; forward checks the backbone gives it.
        self.backbone_output_shape = tuple(shapes.backbone)
        bev_depth = shapes.backbone[0]
        self.bev_backbone = SECONDFPN(backbone.out_channels * bev_depth, **vars(config.bev))
        self.head = CenterHead(self.bev_backbone.out_channels, head.class_groups, head.shared_channels,
                               head.head_channels, heading=head.heading)
        self.grid = BEVGrid(tuple(geometry.point_cloud_range), tuple(geometry.voxel_size), shapes.out_size_factor)
        if self.grid.shape != shapes.bev:  # the decoder's grid and the head's map must be one and the same
            raise RuntimeError(f"internal: BEV grid {self.grid.shape} differs from the head's map {shapes.bev}")

    def forward(self, clouds: list) -> list[dict[str, torch.Tensor]]:
        return self.forward_voxels(self.voxelize(clouds)[0])

    def voxelize(self, clouds: list):
        """(the batch's SparseTensor, per cloud the voxelizer's DroppedPoints), with the voxel limit of
        the current mode, on the model's device."""
        device = next(self.head.parameters()).device
        if device.type != "cpu":  # the voxelizer works where the points are: on the model's device
            clouds = [torch.as_tensor(cloud, device=device) for cloud in clouds]
        return self.voxelizers["train" if self.training else "test"].batch(clouds)

    def forward_voxels(self, tensor) -> list[dict[str, torch.Tensor]]:
        """Head predictions for a batch already voxelized by :meth:`voxelize`."""
        sparse = self.backbone_3d(tensor).out
        if tuple(sparse.spatial_shape) != self.backbone_output_shape:  # else boxes decode at wrong places
            raise RuntimeError(f"{type(self.backbone_3d).__name__} returned a {tuple(sparse.spatial_shape)} grid, but "
                               f"declares {self.backbone_output_shape} (output_shape), for which the BEV network and "
                               f"the decoder were built")
        return self.head(self.bev_backbone(self.bev_map(sparse)))

    def bev_map(self, sparse) -> torch.Tensor:
        """The backbone's stride-8 SparseTensor as the (B, C * D, H, W) BEV input of the 2D network.

        In eval mode it is laid out channels-last: oneDNN's 2D convs then run ~10% faster in fp32 and
        ~3x faster in bf16 on CPU (measured on the KITTI BEV); training keeps the default layout.
        """
        bev = height_compression(sparse)
        return bev if self.training else bev.contiguous(memory_format=torch.channels_last)

    def targets(self, gt_boxes, gt_labels) -> list[dict[str, torch.Tensor]]:
        """One sample's training targets on this model's head grid."""
        head = self.config.head
        return build_targets(gt_boxes, gt_labels, head.class_groups, head.class_names, self.grid,
                             head.min_overlap, head.min_radius, head.max_objects)

    def loss(self, predictions, batched_targets, normaliser=at_least_one) -> dict[str, torch.Tensor]:
        """The losses; ``normaliser`` as in :func:`detectors.center_head.center_loss` (DDP)."""
        head = self.config.head
        losses = center_loss(predictions, batched_targets, head.code_weights, head.heatmap_weight,
                             head.regression_weight, normaliser, head.direction_weight)
        return losses if self.activation_penalty is None else self.activation_penalty.add_to(losses)

    @classmethod
    def from_checkpoint(cls, path: str, config=None, device="cpu", overrides=()) -> "CenterPoint":
        """A trained model in eval mode on ``device``: ``CenterPoint.from_checkpoint(path).predict([points])``.
        config: None (the checkpoint's own, else the run folder's config.yaml), a YAML path or a config;
        points: the model's features (``detectors.inference.model_points`` reads a file as such)."""
        from detectors.inference import load_detector  # inference builds on this module
        return load_detector(path, config, device, overrides)

    def predict(self, clouds: list) -> list[dict[str, torch.Tensor]]:
        return self.predict_voxels(self.voxelize(self.test_views(clouds))[0])

    def test_views(self, clouds: list) -> list:
        """The clouds :meth:`predict_voxels` expects voxelized: with ``model.test_augmentation``, each
        cloud's views one after the other (the cloud itself first), else the clouds."""
        return views(clouds, self.config.test_augmentation)

    @torch.no_grad()
    def predict_voxels(self, tensor) -> list[dict[str, torch.Tensor]]:
        """:meth:`predict` for a batch of :meth:`test_views` already voxelized by :meth:`voxelize` (whose
        dropped-point counts a caller reports, without voxelizing twice)."""
        head = self.config.head
        with self.inference_autocast():
            predictions = merge_views(self.forward_voxels(tensor), self.config.test_augmentation)
        return decode(predictions, head.class_groups, head.class_names, self.grid, self.config.decode)

    def inference_autocast(self) -> torch.autocast:
        """The autocast context of ``model.inference_precision`` on this model's device (disabled for fp32)."""
        dtype = INFERENCE_PRECISIONS[self.config.inference_precision]
        device_type = next(self.parameters()).device.type
        refusing = {m.backend for m in self.modules()
                    if isinstance(m, SparseConvolution) and not get_backend(m.backend).runs_bfloat16(device_type)}
        if dtype == torch.bfloat16 and refusing:
            raise ValueError(f"model.inference_precision={self.config.inference_precision}: the sparse-conv backend "
                             f"{sorted(refusing)} takes no bfloat16 on {device_type}; use the torch backend")
        return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)



__all__ = ["CenterPoint", "ModelConfig", "ModelShapes", "REGRESSION_CODE", "model_shapes"]
