"""Voxel geometries of the published configs, for tools that voxelize without a model config."""
from voxelize.voxelizer import Voxelizer

VOXEL_PRESETS = {
    # CenterPoint nuScenes 0.1 m (OpenPCDet cbgs_voxel01_res3d_centerpoint, test-time voxel limit).
    "nuscenes": dict(voxel_size=[0.1, 0.1, 0.2], point_cloud_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0],
                     max_points_per_voxel=10, max_voxels=120000),
    # SECOND KITTI (OpenPCDet second.yaml, test-time voxel limit).
    "kitti": dict(voxel_size=[0.05, 0.05, 0.1], point_cloud_range=[0.0, -40.0, -3.0, 70.4, 40.0, 1.0],
                  max_points_per_voxel=5, max_voxels=40000),
}


def preset_voxelizer(name: str) -> Voxelizer:
    """A hard-mode Voxelizer with the geometry and limits of a published config; it warns with the
    count when the voxel limit drops points (a dense scan can exceed a test-time limit)."""
    if name not in VOXEL_PRESETS:
        raise ValueError(f"unknown voxel preset {name!r}; valid: {sorted(VOXEL_PRESETS)}")
    return Voxelizer(**VOXEL_PRESETS[name], warn_voxel_limit=True)
