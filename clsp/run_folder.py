"""Claiming a training stage's folder: one writer at a time, no finished work overwritten by accident, and a
resume only with settings the saved state was made with."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from clsp.config import RESOLVED_CONFIG_NAME, UNRECORDED_DATA_FIELDS, Config
from clsp.differences import Difference, describe_differences, field_differences
from clsp.errors import ClspError
from clsp.training_state import recover_state_swap

LOCK_FILE = ".lock"
DATA_LOCATION_FIELDS = frozenset(
    f"data.{k}" for k in ("root", "roots", "download", "skip_bad_images", "max_image_pixels", *UNRECORDED_DATA_FIELDS)
)
"""Data settings that say where the files are and how they are read, not what they are."""
DATA_RESUME_SAFE = DATA_LOCATION_FIELDS | {"data.labeled_split", "data.test_split"}
"""Data settings a resumed training may change: where the files are and the splits it does not train on."""


def changed_fields(
    saved: dict[str, Any], cfg: Config, sections: tuple[str, ...], safe: frozenset[str]
) -> list[Difference]:
    """The fields under ``sections`` (dotted, e.g. ``ssl`` or ``run.seed``) that differ between the ``saved``
    resolved config (as read from YAML) and ``cfg``, except the ``safe`` ones."""
    new = cfg.model_dump(mode="json")
    differences = []
    for section in sections:
        old_value, new_value = saved, new
        for key in section.split("."):
            old_value = old_value.get(key) if isinstance(old_value, dict) else None
            new_value = new_value.get(key)
        differences += field_differences(old_value, new_value, section)
    return [d for d in differences if d[0] not in safe]


def saved_config(stage_dir: Path) -> dict[str, Any] | None:
    """The resolved config a stage saved in ``stage_dir``, as read from YAML; None when it is missing or unreadable."""
    try:
        saved = yaml.safe_load((stage_dir / RESOLVED_CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def check_resume_config(stage_dir: Path, cfg: Config, sections: tuple[str, ...], safe: frozenset[str]) -> None:
    """Refuse, in one line naming the fields, to resume ``stage_dir`` with settings that its saved resolved config
    does not share (``safe`` fields, e.g. more epochs or another lr, may change)."""
    saved = saved_config(stage_dir)
    if saved is None:
        raise ClspError(
            f"--resume: {stage_dir / RESOLVED_CONFIG_NAME} is missing or unreadable; start over with --overwrite"
        )
    changed = changed_fields(saved, cfg, sections, safe)
    if changed:
        allowed = ", ".join(sorted(safe))
        raise ClspError(
            f"--resume: the run in {stage_dir} was made with other settings ({describe_differences(changed)}); set them back "
            f"(only {allowed} may change on resume) or start over with --overwrite"
        )


def has_saved_state(stage_dir: Path) -> bool:
    """Whether ``stage_dir`` holds a resume state (after recovering one an interrupted swap left aside)."""
    recover_state_swap(stage_dir / "state")
    return (stage_dir / "state").is_dir()


def refuse_overwrite(stage_dir: Path, outputs: tuple[str, ...], resume: bool, overwrite: bool) -> None:
    """Without ``resume`` or ``overwrite``, refuse to start a run over the ``outputs`` (paths relative to
    ``stage_dir``, e.g. ``state`` or ``../unet``) that an earlier run left there."""
    if resume or overwrite:
        return
    found = [os.path.relpath(stage_dir / name, stage_dir.parent) for name in outputs if (stage_dir / name).exists()]
    if found and not has_saved_state(stage_dir):
        raise ClspError(
            f"{stage_dir.parent} holds an earlier run ({', '.join(found)}) that saved no resume state (it stopped before "
            "its first checkpoint, or its state was removed): pass --overwrite to start over, or another run.output_dir"
        )
    keep_earlier(stage_dir.parent, ", ".join(found) or None, resume, overwrite, "continue it")


def keep_earlier(folder: Path, earlier: str | None, resume: bool, overwrite: bool, keeping: str) -> bool:
    """The one rerun rule of a stage that finds ``earlier`` work (e.g. "the positives", "an evaluation"; None when
    there is none) in ``folder``: kept with ``resume`` (returns True), redone with ``overwrite`` (False), refused in
    one line with neither. ``keeping`` says what ``--resume`` does there, e.g. "finish or reuse them"."""
    if earlier is None or overwrite:
        return False
    if resume:
        return True
    raise ClspError(
        f"{folder}: holds {earlier} of an earlier run; pass --resume to {keeping}, --overwrite to start over, or "
        "another run.output_dir"
    )


def check_start(
    stage_dir: Path,
    cfg: Config,
    resume: bool,
    overwrite: bool,
    outputs: tuple[str, ...],
    sections: tuple[str, ...],
    safe: frozenset[str],
) -> None:
    """The checks before a training stage writes to ``stage_dir``: ``resume`` needs its ``state/`` and the
    settings it was made with (:func:`check_resume_config`); a fresh start needs ``overwrite`` to replace the
    ``outputs`` of an earlier run (:func:`refuse_overwrite`)."""
    if resume and not has_saved_state(stage_dir):
        raise ClspError(
            f"--resume: no saved state in {stage_dir / 'state'} (the run stopped before its first checkpoint, or "
            "never ran); start without --resume (with --overwrite if the folder holds an earlier run's files)"
        )
    refuse_overwrite(stage_dir, outputs, resume, overwrite)
    if resume:
        check_resume_config(stage_dir, cfg, sections, safe)


@contextmanager
def run_lock(stage_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``stage_dir`` (one writing process per folder); a second writer gets a
    :class:`ClspError` at once. ``enabled=False`` (non-main processes) does nothing."""
    if not enabled:
        yield
        return
    stage_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(stage_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ClspError(
                f"{stage_dir} is being written by another process (pid {holder}); wait for it to finish or use "
                "another run.output_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
