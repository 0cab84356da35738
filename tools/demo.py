"""The main job on the built-in example and, when present, the real scans in ../shared/data/real.

    python tools/demo.py --out work/demo [--real-data ../shared/data/real]

Today: voxelize each cloud with its sensor's published geometry, batch them into sparse
tensors, and print the statistics; the summary is written to OUT/summary.json.
"""
import argparse
import os
import sys
import time

from datasets import read_points
from datasets.atomic_files import write_json_atomically
from datasets.example_scene import example_cloud
from voxelize.presets import preset_voxelizer

REAL_SCANS = [  # (path under the real-data folder, preset)
    ("kitti/velodyne/000000.bin", "kitti"),
    ("kitti/velodyne/000001.bin", "kitti"),
    ("nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin", "nuscenes"),
    ("nuscenes/sweeps10_float16_N5.bin", "nuscenes"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--real-data", default="../shared/data/real",
                        help="folder of the real scans, relative to the current directory (default: %(default)s)")
    args = parser.parse_args()

    clouds = [("built-in example (HDL-32E-like)", "nuscenes", example_cloud(seed=0))]
    for relative, preset in REAL_SCANS:
        path = os.path.join(args.real_data, relative)
        if os.path.isfile(path):
            clouds.append((relative, preset, read_points(path)))
        else:
            print(f"skipping absent real scan {path}")

    rows = []
    print(f"\n{'cloud':<60} {'points':>8} {'dropped':>8} {'voxels':>7} {'pts/voxel':>9} {'ms':>6}")
    for name, preset, points in clouds:
        voxelizer = preset_voxelizer(preset)
        start = time.perf_counter()
        voxels = voxelizer(points)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        summary = dict(cloud=name, preset=preset, milliseconds=elapsed_ms, **voxels.summary())
        rows.append(summary)
        print(f"{name[-60:]:<60} {summary['points']:>8} {sum(summary['dropped'].values()):>8} "
              f"{summary['voxels']:>7} {summary['points_per_voxel_mean']:>9.2f} {elapsed_ms:>6.1f}")

    batches = {}
    for preset in sorted({preset for _, preset, _ in clouds}):
        tensor, _ = preset_voxelizer(preset).batch([points for _, p, points in clouds if p == preset])
        batches[preset] = dict(sites_per_sample=tensor.sites_per_sample().tolist(),
                               spatial_shape=list(tensor.spatial_shape), channels=tensor.num_channels)
        print(f"\n{preset} batch: {tensor}")

    summary_path = os.path.join(args.out, "summary.json")
    write_json_atomically(summary_path, {"clouds": rows, "batches": batches})
    print(f"\nsummary written to {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
