"""Whole views in a few calls: a detector's frame with its boxes, and a backbone's active voxels.

    config = load_centerpoint_config("configs/centerpoint_synthetic_cpu.yaml")
    panels = detector_panels(config, frame, checkpoint="work/demo/run/checkpoint.pt",
                             layer_names=["conv_input.0", "conv2.0.0"])
    render_png(scene_then_layers(panels[0], panels[1:], 2), "view.png", columns=2)

Without a checkpoint the weights are seeded random ones: the active sites of SSC and of regular
convolution do not depend on the weights (only the activation values do).
"""
from __future__ import annotations

import numpy as np
import torch

from visualization.active_sites import compare_active_sites
from visualization.panels import layer_panels, scene_panel
from visualization.render import Panel
from voxelize.voxelizer import Voxelizer


def scene_then_layers(scene: Panel | None, layers: list[Panel], columns: int) -> list[Panel | None]:
    """Panels for a grid of ``columns``: the scene on a row of its own, then the layer panels (a
    layer's variants side by side when ``columns`` is the number of variants)."""
    if scene is None:
        return list(layers)
    return [scene] + [None] * (columns - 1 if layers else 0) + list(layers)


def active_voxel_panels(points: np.ndarray, voxelizer: Voxelizer, backbone_type: str, layer_names,
                        variants=("ssc", "regular"), extent=None, max_cubes: int = 200_000,
                        footprint: bool = False, **variant_options) -> list[Panel]:
    """Voxelize ``points``, run each conv-type variant of the backbone, and draw the named layers'
    output sites by origin (``footprint``: by column, for views from above; see ``layer_panel``),
    the variants of a layer side by side. ``variant_options`` go to
    ``backbones.densification_meter.conv_type_variants`` (state_dict, seed, backend, channels, ...)."""
    tensor, _ = voxelizer.batch([points])
    sites = compare_active_sites(backbone_type, tensor, list(layer_names), variants, **variant_options)
    return layer_panels(sites, voxelizer.voxel_size, voxelizer.point_cloud_range, extent, max_cubes, footprint)


def detector_panels(config, frame: dict, checkpoint: str | None = None, layer_names=(),
                    variants=("ssc", "regular"), score_threshold: float = 0.3, scene: bool = True, extent=None,
                    seed: int = 0, max_cubes: int = 200_000, footprint: bool = False) -> list[Panel]:
    """Panels for one frame ({'points', 'gt_boxes', 'gt_labels'}) under a CenterPoint config: the
    scene with GT boxes (and, with a checkpoint, predictions above ``score_threshold`` with their
    scores), then the active voxels of ``layer_names`` with the model's voxelizer and backbone."""
    from detectors.centerpoint import CenterPoint
    from detectors.checkpoints import load_model_weights

    torch.manual_seed(seed)
    model = CenterPoint(config.model).eval()
    if checkpoint is not None:
        load_model_weights(model, checkpoint)
    names = config.model.head.class_names
    panels = []
    if scene:
        predicted = {}
        if checkpoint is not None:
            detections = model.predict([frame["points"]])[0]
            keep = detections["scores"] >= score_threshold
            predicted = dict(pred_boxes=detections["boxes"][keep].numpy(),
                             pred_scores=detections["scores"][keep].tolist(),
                             pred_names=[names[int(label)] for label in detections["labels"][keep]])
        title = "points, GT boxes" + (f", predictions (darker, score >= {score_threshold:g})" if predicted else "")
        panels.append(scene_panel(frame["points"], frame.get("gt_boxes"),
                                  [names[int(label)] for label in frame.get("gt_labels", [])],
                                  title=title, extent=extent, **predicted))
    if layer_names:
        backbone = config.model.backbone_3d
        panels += active_voxel_panels(frame["points"], model.voxelizers["test"], backbone.type, layer_names,
                                      variants, extent, max_cubes, footprint, state_dict=model.backbone_3d.state_dict(),
                                      backend=backbone.backend, channels=backbone.channels,
                                      out_channels=backbone.out_channels)
    return panels
