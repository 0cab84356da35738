"""Write the frames of a dataset into the custom layout or the KITTI object layout.

    python tools/convert_dataset.py CONFIG --to custom|kitti --out DIR [a.b=value ...] [--splits S ...]

The frames are those of the config's dataset (``dataset.train_split`` and ``dataset.val_split``
unless --splits is given), read with every class of its labels; each split is written to
DIR/ImageSets/<split>.txt as ``train`` / ``val``. DIR must not hold converted frames already (a second
conversion into it is refused rather than overwriting another split's frames). For the synthetic world (a nuScenes
database):

    python tools/make_synthetic.py --out work/synthetic64 --scenes 20 --lidar hdl64e
    python tools/convert_dataset.py configs/centerpoint_synthetic_cpu.yaml --to kitti --out work/kitti_synthetic \\
        dataset.root=work/synthetic64 dataset.num_sweeps=1

--to kitti reads a nuScenes-type dataset (LIDAR_TOP axes: x right, y forward; the nuScenes classes).
"""
import argparse
import sys

from datasets.dataset_types import build_dataset
from datasets.layout_writers import write_custom_frames, write_kitti_frames
from detectors.experiment import load_centerpoint_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="a.b=value settings applied over the config")
    parser.add_argument("--to", required=True, choices=["custom", "kitti"])
    parser.add_argument("--out", required=True, help="the folder to write")
    parser.add_argument("--splits", nargs="+", help="source splits (default: the config's train and val splits)")
    args = parser.parse_intermixed_args()
    config = load_centerpoint_config(args.config, args.overrides)
    sources = args.splits or [config.dataset.train_split, config.dataset.val_split]
    targets = ["train", "val"] if not args.splits else sources
    written = 0
    for source, target in zip(sources, targets):
        frames = build_dataset(config.dataset, source, config.model.head.class_names)
        if args.to == "kitti":
            names = write_kitti_frames(frames, args.out, target, first_index=written)
        else:
            names = write_custom_frames(frames, args.out, target, first_index=written)
        written += len(names)
        print(f"{source}: {len(names)} frames → {args.out} ({args.to}, ImageSets/{target}.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
