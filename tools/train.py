"""Train CenterPoint from a YAML config.

    python tools/train.py CONFIG [a.b=value ...] --out RUN_DIR [--resume | --overwrite] [--max-steps N]
    torchrun --nproc_per_node=N tools/train.py CONFIG --out RUN_DIR      (DDP; gloo on CPU, nccl on CUDA)
    python tools/train.py CONFIG train.processes=N --out RUN_DIR         (the same N processes, started by train)
"""
import argparse
import sys

from command_line import add_debug_option, run_tool

from detectors.experiment import load_centerpoint_config
from detectors.training import train
from voxelize.allocator import keep_freed_memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="a.b=value settings applied over the config")
    parser.add_argument("--out", required=True, help="run folder: resolved config, log.jsonl, checkpoints")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true",
                      help="continue the run of RUN_DIR from its checkpoint.pt (same config)")
    runs.add_argument("--overwrite", action="store_true",
                      help="start over in a RUN_DIR that holds a run: the old folder is renamed RUN_DIR.replaced-TIME")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    add_debug_option(parser)
    args = parser.parse_intermixed_args()  # a.b=value after the options too, as the README writes them
    keep_freed_memory()  # each training step allocates the same large temporaries anew (voxelize/allocator.py)
    config = load_centerpoint_config(args.config, args.overrides)
    result = train(config, args.out, resume=args.resume, max_steps=args.max_steps, overwrite=args.overwrite)
    print(f"trained {result['steps']} steps; last loss {result['last_loss']:.4f}; checkpoint {result['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
