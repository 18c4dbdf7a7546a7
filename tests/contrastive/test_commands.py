"""``clsp train``'s command function, registered on a local Typer app as clsp/cli.py registers it."""

import typer
from typer.testing import CliRunner

from clsp.contrastive.commands import train_command
from clsp.errors import ClspError

app = typer.Typer()
app.command("train")(train_command)


@app.command()
def info() -> None:  # a second command, so Typer keeps "train" as a subcommand name
    pass


def test_train_command_runs_and_summarises(fast_config, fast_overrides, tmp_path, repo_root):
    fast_config()  # writes the positive store
    overrides = [o for o in fast_overrides if not o.startswith("ssl.positives")] + ["ssl.epochs=1"]
    args = ["train", str(repo_root / "configs" / "digits.yaml"), "--positives", str(tmp_path / "positives")]
    result = CliRunner().invoke(app, [*args, *(f"--set={o}" for o in overrides)])
    assert result.exit_code == 0, result.output
    assert "5 / 5" in result.output and "online probe" in result.output
    assert (tmp_path / "run" / "ssl" / "backbone.safetensors").is_file()
    assert (tmp_path / "run" / "ssl" / "config.yaml").is_file()


def test_train_command_raises_clsp_error_for_the_cli_to_print(repo_root, tmp_path):
    result = CliRunner().invoke(
        app, ["train", str(repo_root / "configs" / "digits.yaml"), "--set", "ssl.batch_size=5000"]
    )
    assert isinstance(result.exception, ClspError) and "ssl.batch_size" in str(result.exception)


def train_args(fast_config, fast_overrides, tmp_path, repo_root, *extra: str) -> list[str]:
    fast_config()  # writes the positive store
    overrides = [*fast_overrides, "ssl.epochs=1", *extra]
    return ["train", str(repo_root / "configs" / "digits.yaml"), *(f"--set={o}" for o in overrides)]


def test_a_finished_run_is_kept_unless_resume_or_overwrite(fast_config, fast_overrides, tmp_path, repo_root):
    args = train_args(fast_config, fast_overrides, tmp_path, repo_root)
    assert CliRunner().invoke(app, args).exit_code == 0
    weights = (tmp_path / "run" / "ssl" / "backbone.safetensors").read_bytes()
    again = CliRunner().invoke(app, [*args, "--set=run.seed=3"])
    assert isinstance(again.exception, ClspError) and "--overwrite to start over" in str(again.exception)
    assert (tmp_path / "run" / "ssl" / "backbone.safetensors").read_bytes() == weights
    assert CliRunner().invoke(app, [*args, "--resume"]).exit_code == 0  # finished: nothing left to do
    assert CliRunner().invoke(app, [*args, "--set=run.seed=3", "--overwrite"]).exit_code == 0
    assert (tmp_path / "run" / "ssl" / "backbone.safetensors").read_bytes() != weights


def test_ctrl_c_fails_the_command_and_resume_finishes(fast_config, fast_overrides, tmp_path, repo_root, monkeypatch):
    import os
    import signal

    import clsp.contrastive.train

    momentum = clsp.contrastive.train.moco_momentum

    def ctrl_c_in_step_2(step, *args):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return momentum(step, *args)

    args = train_args(fast_config, fast_overrides, tmp_path, repo_root)
    monkeypatch.setattr(clsp.contrastive.train, "moco_momentum", ctrl_c_in_step_2)
    interrupted = CliRunner().invoke(app, args)
    monkeypatch.undo()
    from clsp.interrupt import Interrupted, exit_code

    assert (
        isinstance(interrupted.exception, Interrupted) and exit_code(interrupted.exception) == 130
    )  # cli.main exits so
    assert "2 / 5" in interrupted.output and (tmp_path / "run" / "ssl" / "state").is_dir()
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0 and "5 / 5" in resumed.output


def test_sigterm_saves_the_state_exits_143_and_resume_finishes(fast_config, fast_overrides, tmp_path, repo_root):
    """What a scheduler (SLURM, Kubernetes, spot preemption) sends before killing a job."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # two DataLoader workers, and SIGTERM to the whole process group, as SLURM signals every process of a job
    args = train_args(fast_config, fast_overrides, tmp_path, repo_root, "ssl.epochs=40", "ssl.num_workers=2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "clsp.cli", *args]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "run" / "ssl" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "Traceback" not in err
    assert (tmp_path / "run" / "ssl" / "state" / "progress.json").is_file()
    resumed = CliRunner().invoke(app, [*args[:2], *args[2:], "--resume", "--set=ssl.epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    assert (tmp_path / "run" / "ssl" / "backbone.safetensors").is_file()
