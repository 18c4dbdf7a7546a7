"""Which trained encoder ``clsp export`` and ``clsp features`` use, and why: ``--run PATH``, the run's own
``<output_dir>/ssl``, or the encoder a ``clsp demo`` in ``<output_dir>`` records as its result."""

from dataclasses import dataclass
from pathlib import Path

from clsp.config import Config
from clsp.contrastive.backbones import CONFIG_FILE, WEIGHTS_FILE
from clsp.errors import ClspError
from clsp.run_layout import RunLayout

LISTED = 4
"""Run folders named at most in the error that suggests ``--run``."""


@dataclass(frozen=True)
class EncoderSource:
    """``folder`` holds ``backbone.json`` + ``backbone.safetensors``; ``reason`` says why it was chosen."""

    folder: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.folder} ({self.reason})"


def holds_encoder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def find_encoder(cfg: Config, run: Path | None = None) -> EncoderSource:
    """The encoder of ``run`` (a run folder holding ``ssl/``, or that ``ssl/`` folder) when given; else
    ``<output_dir>/ssl``; else the one ``<output_dir>/demo.json`` records. A ClspError says what is missing."""
    if run is not None:
        return _given_run(Path(run))
    own = cfg.layout.ssl
    if holds_encoder(own):
        return EncoderSource(own, "the run's own")
    demo = cfg.layout.demo_result_run()
    if demo is not None:
        folder, reason = RunLayout(demo[0]).ssl, demo[1]
        if not holds_encoder(folder):
            raise ClspError(
                f"{cfg.layout.demo_result}: the encoder it records, {folder}, is missing; "
                "rerun `clsp demo` or pass --run PATH (a run folder holding ssl/)"
            )
        return EncoderSource(folder, reason)
    raise ClspError(
        f"no trained encoder in {own} ({CONFIG_FILE} + {WEIGHTS_FILE}); run `clsp train` first, "
        + _run_hint(cfg.run.output_dir)
    )


def _given_run(run: Path) -> EncoderSource:
    for folder in (RunLayout(run).ssl, run):
        if holds_encoder(folder):
            return EncoderSource(folder, "--run")
    raise ClspError(
        f"--run {run}: no trained encoder in {RunLayout(run).ssl} ({CONFIG_FILE} + {WEIGHTS_FILE}); "
        "point --run at a run folder of `clsp train` or `clsp demo` (e.g. runs/digits/seed0/clsp-simclr)"
    )


def _run_hint(output_dir: Path) -> str:
    """Advice to pass ``--run``, naming the run folders below ``output_dir`` that hold an encoder (a demo's)."""
    found = sorted(
        path.parent.parent
        for pattern in (f"*/ssl/{CONFIG_FILE}", f"*/*/ssl/{CONFIG_FILE}")
        for path in output_dir.glob(pattern)
        if holds_encoder(path.parent)
    )
    if not found:
        return "or pass --run PATH (a run folder holding ssl/)"
    listed = ", ".join(str(p) for p in found[:LISTED]) + (", ..." if len(found) > LISTED else "")
    return f"or pick one with --run PATH ({listed})"
