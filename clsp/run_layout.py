"""Where each stage of a run writes below ``run.output_dir``: one object that every stage and command reads, so a
folder name is written once."""

import json
from dataclasses import dataclass
from pathlib import Path

DEMO_RESULT_FILE = "demo.json"
"""A finished ``clsp demo``'s summary in its folder; its ``encoder`` entry names the run that stands for the result."""


@dataclass(frozen=True)
class RunLayout:
    """The stage folders of the run in ``root`` (``run.output_dir``)."""

    root: Path

    @property
    def diffusion(self) -> Path:
        """DDPM training: resume ``state/``, ``samples.png``, the resolved config."""
        return self.root / "diffusion"

    @property
    def unet(self) -> Path:
        """The trained EMA UNet (diffusers ``save_pretrained``)."""
        return self.root / "unet"

    @property
    def positives(self) -> Path:
        """The positive store when ``ssl.positives`` names none."""
        return self.root / "positives"

    @property
    def ssl(self) -> Path:
        """Contrastive training: ``backbone.json`` + ``backbone.safetensors``, ``metrics.jsonl``, resume ``state/``."""
        return self.root / "ssl"

    @property
    def eval(self) -> Path:
        """``clsp eval`` and ``clsp transfer``: ``metrics.json``, ``report.md``, plots."""
        return self.root / "eval"

    @property
    def export(self) -> Path:
        """``clsp export``: ``<format>/<kind>/`` artifacts."""
        return self.root / "export"

    @property
    def demo_result(self) -> Path:
        return self.root / DEMO_RESULT_FILE

    def demo_result_run(self) -> tuple[Path, str] | None:
        """The run folder of the encoder that :attr:`demo_result` records as the demo's result and a phrase saying
        so; None when the folder holds no finished demo."""
        path = self.demo_result
        if not path.is_file():
            return None
        try:
            encoder = json.loads(path.read_text())["encoder"]
            run, variant, seed = self.root / encoder["run"], encoder["variant"], encoder["seed"]
        except (ValueError, KeyError, TypeError):
            return None  # an older demo.json: no recorded result
        return run, f"the demo's result in {DEMO_RESULT_FILE}: {variant}, seed {seed}"
