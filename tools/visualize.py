"""See a LiDAR frame, its boxes, and which voxels each sparse layer keeps active — SSC vs regular.

    # a frame of a dataset under a detector config (GT boxes; predictions with a checkpoint)
    python tools/visualize.py --config CONFIG [--split NAME] [--index I] [--checkpoint CKPT]
        [--layers conv_input.0 conv2.0.0 ...] [--variants ssc regular] [--save out.png]
    # a KITTI object folder's frame, or a bare point file, with a voxel preset and random weights
    python tools/visualize.py --kitti ROOT [--index I] --layers conv1.0.conv1 --preset kitti
    python tools/visualize.py --scan FILE --layers conv_input.0 [--preset nuscenes] [--seed 0]

Options for every source: --camera bev|chase, --size W H, --view-range X0 Y0 X1 Y1 (metres),
--no-scene (only the layer panels), --list-layers. With a display and no --save, an interactive
Open3D window opens; without a display the PNG is rendered headless (to --save, default view.png).
Voxel colours: blue = the site covers an input site of the layer, orange = added by densification;
seen from above (bev) each (y, x) column is one cube, blue when any site in it covers an input site.
"""
import argparse
import sys

from command_line import add_debug_option, run_tool

from backbones.voxel_backbones import BACKBONES, build_backbone
from datasets import read_points
from datasets.dataset_types import build_dataset
from datasets.kitti_dataset import KittiDataset
from detectors.experiment import load_centerpoint_config
from visualization import display_available, render_png, scene_panel, show_window, sparse_layer_names
from visualization.render import CAMERAS, check_extent, image_format
from visualization.views import active_voxel_panels, detector_panels, scene_then_layers
from voxelize.presets import VOXEL_PRESETS, preset_voxelizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="a CenterPoint YAML config: its dataset, voxelizer and backbone")
    source.add_argument("--kitti", metavar="ROOT", help="a KITTI object folder (velodyne/, label_2/, calib/)")
    source.add_argument("--scan", help="a point file (KITTI .bin, nuScenes .pcd.bin, float16 stack, .npy)")
    parser.add_argument("overrides", nargs="*", help="a.b=value settings over --config")
    parser.add_argument("--split", help="dataset split (default: the config's val_split)")
    parser.add_argument("--index", type=int, default=0, help="frame index in the split (default: 0)")
    parser.add_argument("--checkpoint", help="trained weights (with --config): predictions and the trained backbone")
    parser.add_argument("--preset", choices=sorted(VOXEL_PRESETS), default="nuscenes",
                        help="voxel geometry for --kitti/--scan (default: %(default)s)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="VoxelResBackBone8x",
                        help="3D backbone for --kitti/--scan")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--layers", nargs="*", default=[], help="sparse layers to draw, by the meter's names")
    parser.add_argument("--variants", nargs="+", default=["ssc", "regular"], choices=["ssc", "regular"])
    parser.add_argument("--list-layers", action="store_true", help="print the sparse layer names and exit")
    parser.add_argument("--no-scene", action="store_true", help="leave out the points-and-boxes panel")
    parser.add_argument("--score-threshold", type=float, default=0.3)
    parser.add_argument("--camera", choices=CAMERAS, default="bev")
    parser.add_argument("--size", type=int, nargs=2, default=[1600, 900], metavar=("W", "H"))
    parser.add_argument("--view-range", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="draw only this part of the scene (metres, LiDAR frame)")
    parser.add_argument("--columns", type=int, help="panels per row (default: one per variant)")
    parser.add_argument("--max-cubes", type=int, default=200_000,
                        help="above this many sites a layer is drawn as points at the voxel centres")
    parser.add_argument("--save", help="write a PNG or JPEG (.png, .jpg; headless) instead of opening a window")
    add_debug_option(parser)
    args = parser.parse_intermixed_args()  # a.b=value after the options too, as the README writes them
    if args.overrides and not args.config:
        parser.error("a.b=value overrides need --config")
    if args.checkpoint and not args.config:
        parser.error("--checkpoint needs --config (the model the weights belong to)")
    check_extent(args.view_range)  # refused before the work, not after it
    if args.columns is not None and args.columns < 1:
        raise ValueError(f"--columns must be at least 1, got {args.columns}")
    if not 0.0 <= args.score_threshold <= 1.0:
        raise ValueError(f"--score-threshold is a detection score in [0, 1], got {args.score_threshold:g}")
    if args.save:
        image_format(args.save)

    if args.config:
        config = load_centerpoint_config(args.config, args.overrides)
        dataset = build_dataset(config.dataset, args.split or config.dataset.val_split, config.model.head.class_names)
        if args.list_layers:
            backbone = config.model.backbone_3d
            model = build_backbone(backbone.type, in_channels=config.model.num_point_features,
                                   channels=backbone.channels, out_channels=backbone.out_channels)
            print("\n".join(sparse_layer_names(model)))
            return 0
        check_index(args.index, dataset, f"split {args.split or config.dataset.val_split!r} of {config.dataset.root}")
        panels = detector_panels(config, dataset[args.index], args.checkpoint, args.layers, args.variants,
                                 args.score_threshold, not args.no_scene, args.view_range, args.seed, args.max_cubes,
                                 footprint=args.camera == "bev")
    else:
        if args.kitti:
            dataset = KittiDataset(args.kitti)
            check_index(args.index, dataset, f"KITTI folder {args.kitti}")
            frame = dataset[args.index]
            names = [dataset.class_names[int(label)] for label in frame["gt_labels"]]
        else:
            frame, names = {"points": read_points(args.scan), "gt_boxes": None}, []
        if args.list_layers:
            print("\n".join(sparse_layer_names(build_backbone(args.backbone, in_channels=4))))
            return 0
        panels = [] if args.no_scene else [scene_panel(frame["points"], frame["gt_boxes"], names,
                                                       title="points" + (", GT boxes" if names else ""),
                                                       extent=args.view_range)]
        if args.layers:
            panels += active_voxel_panels(frame["points"], preset_voxelizer(args.preset), args.backbone, args.layers,
                                          args.variants, args.view_range, args.max_cubes,
                                          footprint=args.camera == "bev", seed=args.seed)
    if not panels:
        parser.error("nothing to draw: give --layers, or leave out --no-scene")

    columns = args.columns if args.columns is not None else (len(args.variants) if args.layers else 1)
    if not args.no_scene:
        panels = scene_then_layers(panels[0], panels[1:], columns)
    if args.save or not display_available():
        path = render_png(panels, args.save or "view.png", tuple(args.size), args.camera, columns,
                          extent=args.view_range)
        print(f"wrote {path} ({args.size[0]}x{args.size[1]}, {len(panels)} panels)")
    else:
        show_window(panels, columns)
    return 0


def check_index(index: int, dataset, what: str) -> None:
    if not 0 <= index < len(dataset):
        raise IndexError(f"--index {index} is not a frame of the {what}: it has {len(dataset)} frames "
                         f"(0 to {len(dataset) - 1})")


if __name__ == "__main__":
    sys.exit(run_tool(main))
