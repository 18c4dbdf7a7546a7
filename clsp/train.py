"""The ``accelerate launch`` entry point for self-supervised training; the loop is :mod:`clsp.contrastive.train`.

Run as ``accelerate launch clsp/train.py --config configs/digits.yaml [--set k=v ...] [--positives DIR] [--resume]
[--overwrite] [--max-steps N]`` (or ``torchrun --nproc_per_node N clsp/train.py ...``); ``clsp train CONFIG`` does the same in
one process.
"""

from pathlib import Path

from clsp.cli_args import run_script, script_parser


def main(argv: list[str] | None = None) -> None:
    parser = script_parser(__doc__.splitlines()[0], "ssl/state")
    parser.add_argument("--positives", type=Path, help="positive store folder (default: ssl.positives)")
    parser.add_argument("--max-steps", type=int, help="stop (saving the state) after this many steps in all")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"ssl.positives={args.positives}"] if args.positives else [])
    from clsp.contrastive.train import run_training  # torch loads slowly: only once the arguments parsed

    run_script(parser, lambda: run_training(args.config, overrides, args.resume, args.max_steps, args.overwrite))


if __name__ == "__main__":
    main()
