"""Benchmarks, printed as markdown tables with the machine they ran on.

    python tools/benchmark.py voxelize [--real-data ../shared/data/real] [--repeats 7] [--threads 1 2]
"""
import argparse
import os
import sys

from voxelize.benchmark import benchmark_voxelize, machine_description, voxelize_table

REAL_CLOUDS = [  # (path under the real-data folder, geometry)
    ("nuscenes/sweeps10_float16_N5.bin", "nuscenes"),
    ("kitti/velodyne/000000.bin", "kitti"),
    ("kitti/velodyne/000001.bin", "kitti"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    voxelize = sub.add_parser("voxelize", help="our Voxelizer vs spconv PointToVoxel on the real scans")
    voxelize.add_argument("--real-data", default="../shared/data/real",
                          help="folder of the real scans (default: %(default)s, relative to the current directory)")
    voxelize.add_argument("--repeats", type=int, default=7, help="timed runs per side (median reported)")
    voxelize.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to time")
    args = parser.parse_args()

    clouds = [(os.path.join(args.real_data, rel), geometry) for rel, geometry in REAL_CLOUDS]
    missing = [path for path, _ in clouds if not os.path.isfile(path)]
    if missing:
        parser.error(f"real scans not found: {', '.join(missing)} (set --real-data)")
    print(f"machine: {machine_description()}\n")
    print(voxelize_table(benchmark_voxelize(clouds, threads=args.threads, repeats=args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
