"""Run folders: one writer, no accidental overwrite, resume only with the saved settings."""

import subprocess
import sys

import pytest

from clsp.config import load_config, save_resolved_config
from clsp.errors import ClspError
from clsp.run_folder import changed_fields, check_resume_config, refuse_overwrite, run_lock

SAFE = frozenset({"ssl.epochs", "ssl.lr"})


def test_changed_fields_name_every_difference_outside_the_safe_ones(repo_root):
    saved = load_config(repo_root / "configs" / "digits.yaml").model_dump(mode="json")
    cfg = load_config(
        repo_root / "configs" / "digits.yaml",
        ["ssl.epochs=99", "ssl.lr=0.5", "ssl.batch_size=64", "data.test_fraction=0.5", "eval.linear_epochs=3"],
    )
    assert changed_fields(saved, cfg, ("data", "ssl"), SAFE) == [
        ("data.test_fraction", 0.25, 0.5),
        ("ssl.batch_size", 256, 64),
    ]
    assert changed_fields(saved, cfg, ("run.seed",), SAFE) == []


def test_resume_check_reads_the_saved_config_and_says_what_may_change(repo_root, tmp_path):
    config = repo_root / "configs" / "digits.yaml"
    save_resolved_config(load_config(config), tmp_path)
    check_resume_config(tmp_path, load_config(config, ["ssl.epochs=90"]), ("ssl",), SAFE)
    with pytest.raises(
        ClspError, match=r'ssl\.method: "simclr" -> "moco"\); set them back \(only ssl\.epochs, ssl\.lr'
    ):
        check_resume_config(tmp_path, load_config(config, ["ssl.method=moco"]), ("ssl",), SAFE)
    (tmp_path / "config.yaml").write_bytes(b"\x80\x04binary")
    with pytest.raises(ClspError, match="config.yaml is missing or unreadable"):
        check_resume_config(tmp_path, load_config(config), ("ssl",), SAFE)


def test_refuse_overwrite_only_without_resume_or_overwrite(tmp_path):
    refuse_overwrite(tmp_path, ("state",), resume=False, overwrite=False)
    (tmp_path / "state").mkdir()
    with pytest.raises(ClspError, match=r"holds \S*/state of an earlier run; pass --resume to continue it"):
        refuse_overwrite(tmp_path, ("state", "metrics.jsonl"), resume=False, overwrite=False)
    refuse_overwrite(tmp_path, ("state",), resume=True, overwrite=False)
    refuse_overwrite(tmp_path, ("state",), resume=False, overwrite=True)


def test_a_run_killed_before_its_first_checkpoint_gets_one_consistent_message(tmp_path):
    from clsp.run_folder import check_start

    stage = tmp_path / "ssl"
    stage.mkdir()
    (stage / "metrics.jsonl").write_text("")
    with pytest.raises(ClspError, match=r"saved no resume state .*pass --overwrite to start over"):
        refuse_overwrite(stage, ("state", "metrics.jsonl"), resume=False, overwrite=False)
    with pytest.raises(ClspError, match=r"--resume: no saved state .*start without --resume \(with --overwrite"):
        check_start(stage, None, True, False, ("state", "metrics.jsonl"), (), frozenset())


def test_the_lock_excludes_another_process_and_is_released(tmp_path):
    holder = (
        "import sys; from clsp.run_folder import run_lock\nwith run_lock(__import__('pathlib').Path(sys.argv[1])):\n"
    )
    holder += "    print('held', flush=True); sys.stdin.readline()\n"
    other = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        with (
            pytest.raises(ClspError, match=rf"being written by another process \(pid {other.pid}\)"),
            run_lock(tmp_path),
        ):
            pass
    finally:
        other.communicate("\n", timeout=30)
    with run_lock(tmp_path):  # released when its holder exits
        pass
