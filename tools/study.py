"""The sparsity study: train CenterPoint variants alike (SSC, all-regular, regular + top-k site pruning,
SSC + k-WTA, SSC + Hoyer-square penalty), score them with the official nuScenes metric, meter them
on the validation frames, and write study.json, study.csv, study_layers.csv and plots to OUT.

    python tools/study.py CONFIG [a.b=value ...] --out OUT [--variants ssc regular ...] [--epochs N]
        [--seeds 0 1] [--geometry demo|reduced] [--meter-frames N]      (NAME@S,S: that variant's own seeds)
    python tools/study.py CONFIG --gmac-at-init [--variants ...] [--geometry ...]   (no training)

Resumable: a variant finished with the same resolved config is skipped on a rerun (see
detectors/sparsity_study.py). Variants (config overrides): see VARIANTS there.
"""
import argparse
import json
import sys

from detectors.sparsity_study import (
    DEFAULT_VARIANTS,
    GEOMETRIES,
    VARIANTS,
    gmac_at_initialisation,
    parse_variant,
    run_study,
)
from voxelize.allocator import keep_freed_memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="a.b=value settings applied over the config for every variant")
    parser.add_argument("--out", help="study folder (required unless --gmac-at-init)")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="NAME[@S,S]",
                        help=f"variants, each with the --seeds or its own after '@' (e.g. ssc@0,1); "
                             f"from {sorted(VARIANTS)} (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help="training epochs of every variant (default: the config's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--geometry", choices=GEOMETRIES, default="demo",
                        help="demo: the config's; reduced: x-y voxels twice as large (default: %(default)s)")
    parser.add_argument("--meter-frames", type=int, help="meter the first N validation frames (default: all)")
    parser.add_argument("--gmac-at-init", action="store_true",
                        help="only print each variant's backbone GMAC per frame at its initial weights")
    args = parser.parse_intermixed_args()  # a.b=value after the options too, as the README writes them
    keep_freed_memory()  # each training step allocates the same large temporaries anew (voxelize/allocator.py)
    for spec in args.variants:
        try:
            parse_variant(spec, args.seeds)
        except ValueError as error:
            parser.error(str(error))
    if args.gmac_at_init:
        names = list(dict.fromkeys(parse_variant(spec, args.seeds)[0] for spec in args.variants))
        summaries = gmac_at_initialisation(args.config, args.overrides, names, args.geometry,
                                           args.meter_frames or 1, args.seeds[0])
        print(json.dumps({variant: {k: v for k, v in summary.items() if k != "layers"}
                          for variant, summary in summaries.items()}, indent=1))
        return 0
    if not args.out:
        parser.error("--out is required")
    records = run_study(args.config, args.out, args.variants, args.overrides, args.epochs, args.seeds, args.geometry,
                        args.meter_frames)
    for record in records:
        print(f"{record['variant']:<14} seed {record['seed']}: mAP {record['metrics']['mAP']:.3f} "
              f"NDS {record['metrics']['NDS']:.3f}  {record['trained']['gmac_per_frame']:.3f} GMAC/frame "
              f"({record['trained']['skippable_gmac_per_frame']:.3f} skippable)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
