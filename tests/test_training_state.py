"""Resume state as safetensors + JSON: exact round trip, nothing unpickled, non-finite weights never saved."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from clsp.accelerator import stage_accelerator
from clsp.errors import ClspError
from clsp.training_state import (
    commit_pending_state,
    load_training_state,
    non_finite_loss,
    save_training_state,
)


class RunsCode:
    """Unpickling this runs ``touch <marker>``: what a tampered checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def trained(optimizer_class=torch.optim.SGD, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    kwargs = {"momentum": 0.9} if optimizer_class is torch.optim.SGD else {}
    optimizer = optimizer_class(model.parameters(), lr=0.01, **kwargs)
    for _ in range(2):
        model(torch.randn(5, 1, 8, 8)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


@pytest.fixture
def accelerator():
    return stage_accelerator("no")


@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.Adam])
def test_round_trip_restores_model_optimizer_progress_extra_and_rng(accelerator, tmp_path, optimizer_class):
    model, optimizer = trained(optimizer_class)
    extra = {"ema": {"0": torch.randn(3, 2)}}
    torch.manual_seed(123)
    save_training_state(accelerator, tmp_path / "state", model, optimizer, {"step": 7, "sums": {"a": 1.5}}, extra)
    expected_draw = torch.rand(4)

    fresh, fresh_optimizer = trained(optimizer_class, seed=1)
    progress, tensors = load_training_state(accelerator, tmp_path / "state", fresh, fresh_optimizer, ("ema",))
    assert progress == {"step": 7, "sums": {"a": 1.5}}
    torch.testing.assert_close(tensors["ema"]["0"], extra["ema"]["0"])
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for i, entries in saved["state"].items():
        for key, value in entries.items():
            torch.testing.assert_close(loaded["state"][i][key], value, rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(4), expected_draw)  # the RNG continues where it was saved
    assert {p.name for p in (tmp_path / "state").iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "optimizer.json", "progress.json", "rng_0.safetensors",
        "ema.safetensors",
    }  # fmt: skip


def test_no_file_of_a_state_folder_can_run_code(accelerator, tmp_path):
    model, optimizer = trained()
    good = tmp_path / "good"
    save_training_state(accelerator, good, model, optimizer, {"step": 1})
    marker = tmp_path / "pwned"
    for victim in sorted(p.name for p in good.iterdir()):
        state = tmp_path / f"tampered-{victim}"
        shutil.copytree(good, state)
        torch.save({"state": RunsCode(marker)}, state / victim)
        with pytest.raises(
            ClspError, match=rf"{victim}: (unreadable resume state|not UTF-8|not valid JSON).*--overwrite"
        ) as e:
            load_training_state(accelerator, state, *trained())
        assert "\n" not in str(e.value)
        assert not marker.exists(), victim
    # What Accelerate's load_state would unpickle is never read at all.
    for planted in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "pytorch_model.bin"):
        torch.save({"state": RunsCode(marker)}, good / planted)
    load_training_state(accelerator, good, *trained())
    assert not marker.exists()


def test_truncated_or_foreign_files_are_one_line_errors(accelerator, tmp_path):
    model, optimizer = trained()
    save_training_state(accelerator, tmp_path / "state", model, optimizer, {"step": 1})
    weights = tmp_path / "state" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ClspError, match="model.safetensors: unreadable resume state"):
        load_training_state(accelerator, tmp_path / "state", *trained())
    save_training_state(accelerator, tmp_path / "state", model, optimizer, {"step": 1})
    other = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ClspError, match="model.safetensors: holds another model"):
        load_training_state(accelerator, tmp_path / "state", other, torch.optim.SGD(other.parameters(), lr=0.1))


def test_non_finite_weights_are_never_saved_and_the_last_state_stays(accelerator, tmp_path):
    model, optimizer = trained()
    save_training_state(accelerator, tmp_path / "state", model, optimizer, {"step": 1})
    before = (tmp_path / "state" / "model.safetensors").read_bytes()
    model[1].running_var[2] = float("inf")
    with pytest.raises(ClspError, match=r"non-finite \(1\.running_var\) at step 2; .* keeps the last good state"):
        save_training_state(accelerator, tmp_path / "state", model, optimizer, {"step": 2})
    assert (tmp_path / "state" / "model.safetensors").read_bytes() == before


def test_a_pending_state_replaces_the_saved_one_only_when_committed(accelerator, tmp_path):
    state = tmp_path / "state"
    model, optimizer = trained()
    save_training_state(accelerator, state, model, optimizer, {"step": 1})
    save_training_state(accelerator, state, model, optimizer, {"step": 2}, pending=True)
    assert load_training_state(accelerator, state, *trained())[0]["step"] == 1
    commit_pending_state(accelerator, state)
    assert load_training_state(accelerator, state, *trained())[0]["step"] == 2
    save_training_state(accelerator, state, model, optimizer, {"step": 3}, pending=True)
    error = non_finite_loss(float("nan"), 4, state, "ssl")  # the step after the save diverged
    assert "keeps the last good state: lower ssl.lr" in str(error)
    commit_pending_state(accelerator, state)  # nothing pending any more
    assert load_training_state(accelerator, state, *trained())[0]["step"] == 2


def test_a_swap_interrupted_between_its_renames_is_recovered_on_the_next_start(accelerator, tmp_path):
    from clsp.run_folder import has_saved_state

    state = tmp_path / "ssl" / "state"
    model, optimizer = trained()
    save_training_state(accelerator, state, model, optimizer, {"step": 1})
    save_training_state(accelerator, state, model, optimizer, {"step": 2}, pending=True)
    state.rename(state.with_name(".state.old"))  # replace_folder's first rename happened, the kill came next
    assert has_saved_state(tmp_path / "ssl")
    assert load_training_state(accelerator, state, *trained())[0]["step"] == 2  # the commit it was making
    assert sorted(p.name for p in state.parent.iterdir()) == ["state"]
    # a lone pending state (no swap was under way) was never committed: it is not the saved state
    save_training_state(accelerator, state, model, optimizer, {"step": 3}, pending=True)
    import shutil

    shutil.rmtree(state)
    assert not has_saved_state(tmp_path / "ssl")


def test_a_full_disk_leaves_no_temporary_folder_and_keeps_the_last_state(accelerator, tmp_path, monkeypatch):
    import errno

    import clsp.training_state as training_state
    from clsp.errors import os_error_line

    state = tmp_path / "state"
    model, optimizer = trained()
    save_training_state(accelerator, state, model, optimizer, {"step": 1})

    def full(tensors, path, *args, **kwargs):  # a full disk cannot be made here without root mounts
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(training_state, "save_file", full)
    with pytest.raises(OSError) as e:
        save_training_state(accelerator, state, model, optimizer, {"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]  # no .state.tmp left behind
    assert load_training_state(accelerator, state, *trained())[0]["step"] == 1
    line = os_error_line(e.value)
    assert ".state.tmp/" in line and "No space left on device; " in line and "MiB free there" in line
    assert "\n" not in line
