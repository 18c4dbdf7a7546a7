"""Typer argument and option types that several ``clsp`` commands share."""

from pathlib import Path
from typing import Annotated

import typer

ConfigArgument = Annotated[Path, typer.Argument(help="YAML config, e.g. configs/digits.yaml.", show_default=False)]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set data.image_size=32 (repeatable)."),
]
