"""Writing frames of any dataset type into the custom layout or the KITTI object layout, so the
synthetic world (a nuScenes database) exercises the KITTI and custom paths end to end without a
download.

KITTI (:func:`write_kitti_frames`): velodyne/NNNNNN.bin (x, y, z, reflectance 0..1), calib/ with a
fixed, plausible camera-2 calibration (:data:`SYNTHETIC_CALIBRATION`, 1242x375 image), label_2/
with every box that projects into that image — its 2D box, truncation (the share of the projected
box outside the image) and occlusion level (the share of its 2D box covered by nearer objects'
boxes) computed from the geometry, so 2D heights and difficulty levels are those of real labels —
and ImageSets/<split>.txt. The source LiDAR frame is turned to KITTI's (x forward, y left):
nuScenes' LIDAR_TOP has x right, y forward.
"""
from __future__ import annotations

import math
import os

import numpy as np

from atomic_files import write_atomically
from datasets.base import DetectionDataset
from datasets.boxes import box_corners
from datasets.kitti_eval import image_boxes
from datasets.nuscenes_type import NuScenesFrames

# A KITTI-like camera 2: the focal length, principal point and stereo offset of KITTI's calibrations,
# the camera 0.27 m behind and 0.08 m below the LiDAR, axes x right, y down, z forward.
SYNTHETIC_CALIBRATION = {
    "P2": np.array([[721.54, 0.0, 609.56, 44.86], [0.0, 721.54, 172.85, 0.216], [0.0, 0.0, 1.0, 0.00275]]),
    "R0_rect": np.eye(3),
    "Tr_velo_to_cam": np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]]),
}
IMAGE_SIZE = (1242, 375)
# The synthetic world's detection classes as KITTI names; classes KITTI does not label are left out.
KITTI_NAMES = {"car": "Car", "pedestrian": "Pedestrian", "bicycle": "Cyclist", "truck": "Truck",
               "bus": "Misc", "trailer": "Misc", "construction_vehicle": "Misc", "motorcycle": "Misc"}
NUSCENES_TO_KITTI_YAW = -math.pi / 2      # LIDAR_TOP (x right, y forward) → KITTI velodyne (x forward)


def write_custom_frames(frames: DetectionDataset, root: str, split: str, point_features=("x", "y", "z", "intensity"),
                        first_index: int = 0) -> list[str]:
    """Write every frame as points/NAME.npy (the named point columns) and labels/NAME.txt, list the
    names (six digits from ``first_index``) in ImageSets/<split>.txt; returns the names."""
    absent = [name for name in point_features if name not in frames.point_features]
    if absent:
        raise ValueError(f"the frames have no point column {', '.join(absent)} (they have "
                         f"{', '.join(frames.point_features)}); pass point_features= naming columns they have")
    columns = [frames.point_features.index(name) for name in point_features]
    _refuse_overwrite(root, split, first_index, len(frames), [("points", ".npy"), ("labels", ".txt")])
    names = []
    for index in range(len(frames)):
        frame = frames[index]
        name = f"{first_index + index:06d}"
        buffer = _npy_bytes(frame["points"][:, columns].astype(np.float32))
        write_atomically(os.path.join(root, "points", f"{name}.npy"), buffer)
        lines = [" ".join(f"{v:.4f}" for v in box[:7]) + f" {frames.class_names[int(label)]}"
                 for box, label in zip(frame["gt_boxes"], frame["gt_labels"])]
        write_atomically(os.path.join(root, "labels", f"{name}.txt"), "".join(line + "\n" for line in lines).encode())
        names.append(name)
    _write_split(root, split, names)
    return names


def write_kitti_frames(frames: DetectionDataset, root: str, split: str, first_index: int = 0) -> list[str]:
    """Write every frame (points x, y, z, intensity 0..255 in a nuScenes LIDAR_TOP frame; classes of the
    synthetic world) as a KITTI object frame; returns the ids written (six digits from ``first_index``)."""
    rotation = np.array([[math.cos(NUSCENES_TO_KITTI_YAW), -math.sin(NUSCENES_TO_KITTI_YAW)],
                         [math.sin(NUSCENES_TO_KITTI_YAW), math.cos(NUSCENES_TO_KITTI_YAW)]])
    calibration_text = "".join(f"{key}: " + " ".join(f"{v:.12e}" for v in SYNTHETIC_CALIBRATION[key].reshape(-1))
                               + "\n" for key in ("P2", "R0_rect", "Tr_velo_to_cam"))
    if not isinstance(frames, NuScenesFrames):
        raise ValueError(f"write_kitti_frames turns nuScenes LIDAR_TOP frames (x right, y forward) and nuScenes "
                         f"detection classes into KITTI's; got a {type(frames).__name__}")
    intensity = frames.point_features.index("intensity")
    _refuse_overwrite(root, split, first_index, len(frames),
                      [("velodyne", ".bin"), ("calib", ".txt"), ("label_2", ".txt")])
    ids = []
    for index in range(len(frames)):
        frame = frames[index]
        frame_id = f"{first_index + index:06d}"
        points = frame["points"]
        reflectance = np.clip(points[:, intensity] / 255, 0, 1)
        velodyne = np.column_stack([points[:, :2] @ rotation.T, points[:, 2], reflectance])
        boxes = frame["gt_boxes"][:, :7].astype(np.float64).copy()
        boxes[:, :2] = boxes[:, :2] @ rotation.T
        boxes[:, 6] = np.remainder(boxes[:, 6] + NUSCENES_TO_KITTI_YAW + math.pi, 2 * math.pi) - math.pi
        names = [KITTI_NAMES.get(frames.class_names[int(label)]) for label in frame["gt_labels"]]
        rows = kitti_label_rows(boxes, names)
        write_atomically(os.path.join(root, "velodyne", f"{frame_id}.bin"), velodyne.astype(np.float32).tobytes())
        write_atomically(os.path.join(root, "calib", f"{frame_id}.txt"), calibration_text.encode())
        write_atomically(os.path.join(root, "label_2", f"{frame_id}.txt"), "".join(rows).encode())
        ids.append(frame_id)
    _write_split(root, split, ids)
    return ids


def kitti_label_rows(boxes: np.ndarray, names: list) -> list[str]:
    """label_2 lines of LiDAR-frame boxes (M, 7) under :data:`SYNTHETIC_CALIBRATION`; boxes named None
    or outside the image are left out (KITTI labels what camera 2 sees)."""
    if not len(boxes):
        return []
    clipped, in_image = image_boxes(boxes, SYNTHETIC_CALIBRATION, IMAGE_SIZE)
    truncation = _truncation(boxes, clipped)
    velo_to_cam = SYNTHETIC_CALIBRATION["R0_rect"] @ SYNTHETIC_CALIBRATION["Tr_velo_to_cam"]
    bottom = np.column_stack([boxes[:, :2], boxes[:, 2] - boxes[:, 5] / 2])
    location = bottom @ velo_to_cam[:, :3].T + velo_to_cam[:, 3]
    heading = np.column_stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))]) @ velo_to_cam[:, :3].T
    rotation_y = np.arctan2(-heading[:, 2], heading[:, 0])
    labelled = np.array([name is not None for name in names]) & in_image
    occlusion = _occlusion_levels(clipped, location[:, 2], labelled)
    rows = []
    for i in np.flatnonzero(labelled):
        alpha = math.remainder(rotation_y[i] - math.atan2(location[i, 0], location[i, 2]), 2 * math.pi)
        x1, y1, x2, y2 = clipped[i]
        rows.append(f"{names[i]} {truncation[i]:.2f} {occlusion[i]} {alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} "
                    f"{boxes[i, 5]:.2f} {boxes[i, 4]:.2f} {boxes[i, 3]:.2f} "
                    f"{location[i, 0]:.2f} {location[i, 1]:.2f} {location[i, 2]:.2f} {rotation_y[i]:.2f}\n")
    return rows


def _truncation(boxes: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """Share of each box's projection outside the image (1 when part of the box is behind the camera)."""
    velo_to_cam = SYNTHETIC_CALIBRATION["R0_rect"] @ SYNTHETIC_CALIBRATION["Tr_velo_to_cam"]
    camera = box_corners(boxes) @ velo_to_cam[:, :3].T + velo_to_cam[:, 3]            # (M, 8, 3)
    projection = SYNTHETIC_CALIBRATION["P2"]
    pixels = camera @ projection[:, :3].T + projection[:, 3]
    behind = (camera[..., 2] < 0.1).any(axis=1)
    uv = pixels[..., :2] / np.where(behind[:, None], 1.0, pixels[..., 2])[..., None]
    whole = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)

    def area(b):
        return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)

    share = 1.0 - area(clipped) / np.maximum(area(whole), 1e-9)
    return np.where(behind, 1.0, np.clip(share, 0.0, 1.0))


def _occlusion_levels(bbox: np.ndarray, depth: np.ndarray, labelled: np.ndarray, cell: float = 2.0) -> np.ndarray:
    """KITTI occlusion level per box (0 fully visible, 1 partly, 2 largely occluded): the share of its
    2D box covered by the 2D boxes of nearer labelled objects, on a grid of ``cell`` pixels."""
    width, height = (int(math.ceil(s / cell)) for s in IMAGE_SIZE)
    nearest = np.full((height, width), np.inf)
    levels = np.zeros(len(bbox), dtype=np.int64)
    for i in np.argsort(depth):
        if not labelled[i]:
            continue
        x1, y1, x2, y2 = (int(v / cell) for v in bbox[i])
        region = nearest[y1:y2 + 1, x1:x2 + 1]
        covered = float((region < depth[i]).mean()) if region.size else 0.0
        levels[i] = 0 if covered < 0.1 else (1 if covered < 0.5 else 2)
        region[:] = np.minimum(region, depth[i])
    return levels


def _refuse_overwrite(root: str, split: str, first_index: int, count: int, folders: list[tuple[str, str]]) -> None:
    """A second conversion into the same folder (another split, from index 0 again) would replace the
    first one's frames while its ImageSets list still named them: two splits sharing frames, silently."""
    paths = [os.path.join(root, "ImageSets", f"{split}.txt")] + [
        os.path.join(root, folder, f"{first_index + index:06d}{suffix}")
        for index in range(count) for folder, suffix in folders]
    existing = [path for path in paths if os.path.exists(path)]
    if existing:
        raise FileExistsError(f"{root} already holds converted frames ({len(existing)} of the files to write exist, "
                              f"first {existing[0]}); not overwriting them: write to an empty folder or delete it")


def _write_split(root: str, split: str, names: list[str]) -> None:
    write_atomically(os.path.join(root, "ImageSets", f"{split}.txt"), "".join(f"{name}\n" for name in names).encode())


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
