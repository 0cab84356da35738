"""LiDAR datasets: point-file readers (and, later, loaders, the synthetic world, augmentation)."""
from datasets.point_files import point_file_layout, read_points

__all__ = ["point_file_layout", "read_points"]
