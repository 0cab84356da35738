"""LiDAR datasets: point-file readers, nuScenes and KITTI loaders, the synthetic world, augmentation, export."""
from datasets.point_files import point_file_layout, read_points

__all__ = ["point_file_layout", "read_points"]
