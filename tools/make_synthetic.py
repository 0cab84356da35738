"""Generate the synthetic LiDAR world as a nuScenes database.

    python tools/make_synthetic.py --out DIR --scenes N --seed S [--keyframes 4] [--lidar hdl32e|hdl64e] [--workers N]
        [--no-sweeps]

Writes DIR/v1.0-synthetic/ (13 tables + splits.json with synthetic_train / synthetic_val), and the
.pcd.bin files under DIR/samples and DIR/sweeps (none with --no-sweeps). Load it with
NuScenes("v1.0-synthetic", DIR) or
datasets.nuscenes_dataset.NuScenesDataset(DIR, "v1.0-synthetic", "synthetic_val").
"""
import argparse
import sys
import time

from command_line import add_debug_option, run_tool
from tqdm import tqdm

from datasets.nuscenes_writer import make_synthetic_database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="database root folder")
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keyframes", type=int, default=4, help="key frames per scene (2 Hz)")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    parser.add_argument("--lidar", default="hdl32e", choices=["hdl32e", "hdl64e"])
    parser.add_argument("--workers", type=int, help="processes generating scenes side by side (default: one per "
                                                    "CPU core; the database is the same for any number)")
    parser.add_argument("--no-sweeps", dest="sweeps", action="store_false",
                        help="write the 2 Hz key frames alone, not the 20 Hz sweeps between them: the same key frames "
                             "in about a third of the time, for models of dataset.num_sweeps 1")
    add_debug_option(parser)
    args = parser.parse_args()
    start = time.perf_counter()
    summary = make_synthetic_database(args.out, args.scenes, args.seed, args.keyframes, args.val_fraction,
                                      args.lidar, progress=lambda r: tqdm(r, desc="scenes", unit="scene"),
                                      workers=args.workers, sweeps=args.sweeps)
    print(f"wrote {summary.scenes} scenes, {summary.samples} key frames, {summary.sweeps} sweeps between them, "
          f"{summary.annotations} annotations to {summary.root}/{summary.version} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
