"""Typer argument and option types that several ``clsp`` commands share, and how the entry points exit."""

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

CONFIG_HELP = "YAML config file, or a shipped config by name: digits, fashion_mnist, cifar10_simclr_clsp, ..."
ConfigArgument = Annotated[Path, typer.Argument(help=CONFIG_HELP + ".", show_default=False)]
DefaultConfigArgument = Annotated[Path, typer.Argument(help=CONFIG_HELP + "; default: digits (the embedded dataset).")]
DEFAULT_CONFIG = Path("digits")
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set data.image_size=32 (repeatable)."),
]


def parse_number_list(text: str, option: str, kind: type, example: str, lo: float, hi: float) -> list:
    """``"0,0.1,0.5"`` -> ``[0.0, 0.1, 0.5]`` (``kind`` each); ClspError naming ``option`` unless all in [lo, hi]."""
    from clsp.errors import ClspError

    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ClspError(f"{option} {text!r}: expected comma-separated numbers, e.g. {example}") from None
    if not values or any(not lo <= v <= hi for v in values):
        raise ClspError(f"{option} {text!r}: give one or more values in [{lo:g}, {hi:g}], e.g. {example}")
    return values


def parse_name_list(text: str, option: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``; ClspError naming ``option`` for an empty list or a name not in ``allowed`` (None:
    the config that receives the names checks them)."""
    from clsp.errors import ClspError

    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ClspError(f"{option} {text!r}: give one or more names, comma-separated")
    if allowed is None:
        return names
    unknown = next((name for name in names if name not in allowed), None)
    if unknown is not None:
        raise ClspError(f"{option} {unknown!r}: use {' or '.join(allowed) if len(allowed) < 3 else ', '.join(allowed)}")
    return names


def script_parser(description: str, state_dir: str) -> argparse.ArgumentParser:
    """The options every ``accelerate launch`` training script takes: --config, --set (repeatable), --resume,
    --overwrite."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, required=True, help=CONFIG_HELP)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--resume", action="store_true", help=f"continue from <output_dir>/{state_dir}")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's outputs and state")
    return parser


def run_script(parser: argparse.ArgumentParser, work: Callable[[], object]) -> None:
    """Run a training script's ``work()`` with the CLI's exits: a ClspError, a full disk or a read-only folder is
    one ``error:`` line (exit 2), Ctrl-C exits 130 and SIGTERM 143 (after the loop saved its state); whatever
    happened, the process group is closed before the exit."""
    from clsp.errors import WRITE_ERRNOS, ClspError, os_error_line
    from clsp.interrupt import Interrupted, exit_code

    try:
        work()
    except ClspError as e:
        parser.exit(2, f"error: {e}\n")
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        parser.exit(2, f"error: {os_error_line(e)}\n")
    except (KeyboardInterrupt, Interrupted) as e:
        parser.exit(exit_code(e), "interrupted\n")
    finally:
        close_process_group()


def close_process_group() -> None:
    """Destroy torch.distributed's default process group if this process joined one (torchrun, accelerate launch).

    A process that exits with its gloo group alive can abort in the interpreter's teardown ("terminate called
    without an active exception", SIGABRT) after its work finished, failing the launch. Imports no torch itself.
    """
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
