"""``clsp train``'s command function, registered on a local Typer app as clsp/cli.py registers it."""

import typer
from typer.testing import CliRunner

from clsp.errors import ClspError
from clsp.ssl.commands import train_command

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
