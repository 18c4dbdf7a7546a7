"""The trained UNets shipped in the package (digits, Fashion-MNIST): intact, used where the config says, and still
good."""

import json
import shutil
from pathlib import Path

import pytest

from clsp.config import load_config
from clsp.diffusion import unet as unet_module
from clsp.diffusion.unet import (
    SHIPPED,
    SHIPPED_DIR,
    SHIPPED_PROVENANCE,
    SHIPPED_WEIGHTS,
    build_unet,
    load_pretrained_unet,
    load_trained_unet,
    shipped_provenance,
    trained_unet_source,
)
from clsp.errors import ClspError
from clsp.positives.generate import generate_positives
from clsp.positives.inspect import score_store
from clsp.positives.store import PositiveStore

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "digits-pretrained"
CONFIGS = {NAME: "configs/digits.yaml", "fashion-mnist-pretrained": "configs/fashion_mnist.yaml"}
"""Each shipped UNet and the config whose diffusion section trained it (and whose positives section it serves)."""
FASHION = Path("/usr/share/datasets/fashion-mnist")


def digits(tmp_path: Path, *overrides: str):
    return load_config(REPO_ROOT / CONFIGS[NAME], [f"run.output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_shipped_unet_is_small_complete_and_reproducible(name: str) -> None:
    folder = SHIPPED_DIR / name
    assert name in SHIPPED and (folder / SHIPPED_WEIGHTS).stat().st_size < 10 * 2**20
    provenance = shipped_provenance(name)
    runs = [provenance]  # the run that made it, then the one whose weights it started from, ...
    while "started_from" in runs[-1]:
        runs.append(runs[-1]["started_from"])
    trained_with = [load_config(folder / run["config"]) for run in runs]
    assert all(run["command"].startswith(f"clsp diffusion train {CONFIGS[name]}") for run in runs)
    assert trained_with[-1].diffusion.unet == provenance["preset"]  # the first run started from scratch
    assert all(cfg.diffusion.unet == name for cfg in trained_with[:-1])  # the later ones from the shipped model
    assert all(cfg.diffusion.pretrained is None for cfg in trained_with)
    # the shipped config reproduces it: the config's recipe is the recipe it was trained with, in as many epochs
    shipped_cfg = load_config(REPO_ROOT / CONFIGS[name])
    assert shipped_cfg.diffusion.pretrained == name
    assert sum(cfg.diffusion.epochs for cfg in trained_with) == shipped_cfg.diffusion.epochs == provenance["epochs"]
    recipe = shipped_cfg.diffusion.model_dump(exclude={"pretrained", "unet", "epochs"})
    assert all(cfg.diffusion.model_dump(exclude={"pretrained", "unet", "epochs"}) == recipe for cfg in trained_with)
    unet = load_pretrained_unet(name)
    size = unet.config.sample_size
    reference = build_unet(provenance["preset"], size, 1)
    assert list(unet.config.block_out_channels) == list(reference.config.block_out_channels)
    assert sum(p.numel() for p in unet.parameters()) == sum(p.numel() for p in reference.parameters())


def test_a_tampered_shipped_unet_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(SHIPPED_DIR / NAME, tmp_path / NAME)
    weights = tmp_path / NAME / SHIPPED_WEIGHTS
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01
    weights.write_bytes(bytes(raw))
    monkeypatch.setattr(unet_module, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ClspError, match="SHA-256 differs"):
        load_pretrained_unet(NAME)
    (tmp_path / NAME / SHIPPED_PROVENANCE).unlink()
    with pytest.raises(ClspError, match="reinstall clsp"):
        load_pretrained_unet(NAME)


def test_an_edited_shipped_config_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # act_fn decides what the same weights compute: the config is hashed with them.
    shutil.copytree(SHIPPED_DIR / NAME, tmp_path / NAME)
    config = tmp_path / NAME / "config.json"
    config.write_text(config.read_text().replace('"silu"', '"mish"'))
    monkeypatch.setattr(unet_module, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ClspError, match=r"config.json: SHA-256 differs from provenance.json .*reinstall clsp"):
        load_pretrained_unet(NAME)


def test_the_positives_provenance_hash_covers_the_unet_config() -> None:
    from clsp.positives.generate import unet_content_hash

    unet = load_pretrained_unet(NAME)
    edited = type(unet).from_config({**unet.config, "act_fn": "mish"})
    edited.load_state_dict(unet.state_dict())
    assert unet_content_hash(edited) != unet_content_hash(unet)
    moved = type(unet).from_config({**unet.config, "_name_or_path": "/elsewhere"})
    moved.load_state_dict(unet.state_dict())
    assert unet_content_hash(moved) == unet_content_hash(unet)  # where it was loaded from is not what it computes


def test_which_unet_a_run_samples_with(tmp_path: Path) -> None:
    cfg = digits(tmp_path)
    assert cfg.diffusion.pretrained == NAME and trained_unet_source(cfg) == NAME
    with pytest.raises(ClspError, match="clsp diffusion train"):
        trained_unet_source(digits(tmp_path, "diffusion.pretrained=null"))
    build_unet("tiny", 16, 1).save_pretrained(tmp_path / "unet")  # trained in this run: it wins
    assert trained_unet_source(cfg) == str(tmp_path / "unet")
    with pytest.raises(ClspError, match="32 px"):
        load_trained_unet(digits(tmp_path / "other", "data.image_size=32"))


@pytest.mark.parametrize(
    ("name", "min_class_kept", "max_off_manifold"),
    # Fashion: its whole store keeps the class in 44% of positives (the judge is right on 82% of real images) with
    # 2.2% off-manifold (docs/results.md): short of the 0.8 x judge the method needs; the bounds catch a regression from there.
    # Fashion is slow (~60 s): its two judges are fitted on 10,000 real images for 96 anchors.
    [(NAME, 0.6, 0.1), pytest.param("fashion-mnist-pretrained", 0.32, 0.08, marks=[pytest.mark.slow, pytest.mark.skipif(
        not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")])],
)  # fmt: skip
def test_positives_from_the_shipped_unet_keep_their_class(
    tmp_path: Path, name: str, min_class_kept: float, max_off_manifold: float
) -> None:
    """A regression check of each shipped artifact at its config's sampler settings (the full-store figures are in
    docs/results.md and bench/RESULTS.md): 96 anchors x the config's candidates (digits 2, Fashion 1)."""
    cfg = load_config(REPO_ROOT / CONFIGS[name], [f"run.output_dir={tmp_path}"])
    generate_positives(cfg, limit=96)
    store = PositiveStore.open(tmp_path / "positives")
    assert store.provenance["unet_shipped"]["name"] == name
    assert store.provenance["unet_shipped"]["weights_sha256"] == shipped_provenance(name)["weights_sha256"]
    scores = score_store(store, cfg)
    assert scores["class_kept"] >= min_class_kept and scores["off_manifold"] <= max_off_manifold, json.dumps(scores)[
        :500
    ]
