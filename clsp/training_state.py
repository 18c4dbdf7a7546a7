"""A training loop's resume state as safetensors and JSON only, so loading a state folder can never run code.

Accelerate's ``save_state``/``load_state`` pickle the registered objects and the RNG states, and loading a pickle can
run arbitrary code, so a state folder from an untrusted source would be a hazard. A clsp state folder holds:

* ``model.safetensors``: the unwrapped module's state dict (weights, BatchNorm statistics, queues, key encoder);
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensor state / its param groups and scalar state;
* ``progress.json``: the loop's own counters (step, running sums, ...) and, for fp16, the GradScaler's state;
* ``rng_<process>.safetensors``: each process's torch RNG states (CPU and CUDA; e.g. dropout draws);
* any extra tensor files a loop asks for (the DDPM's EMA weights: ``ema.safetensors``).

A state is written into a fresh folder beside the target and swapped in, so an interruption mid-save keeps the last
state. Before that every weight, buffer and optimizer tensor is checked finite, and a loop that goes on training
saves it as *pending*: it replaces the state only once the next step's loss, computed with those weights, is
finite (:func:`commit_pending_state`). A step that blows up the weights therefore never reaches the saved state,
even when its own loss (computed before its update) was still finite.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from clsp.atomic import give_default_modes, replace_folder
from clsp.errors import ClspError
from clsp.json_files import read_json_object

MODEL_FILE, OPTIMIZER_TENSORS, OPTIMIZER_JSON, PROGRESS_FILE = (
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "progress.json",
)


def non_finite_tensor(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The name of the first parameter, buffer or optimizer state tensor holding a NaN or an infinity, else None."""
    named = [*model.named_parameters(), *model.named_buffers()]
    named += [(f"optimizer state {k}", v) for s in optimizer.state.values() for k, v in s.items() if torch.is_tensor(v)]
    floats = [(name, t) for name, t in named if t.is_floating_point()]
    if not floats:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in floats]).tolist()
    return next((name for (name, _), ok in zip(floats, finite, strict=True) if not ok), None)


def _optimizer_files(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    # JSON turns tuples (Adam's betas) into lists; param groups hold no other lists than their params.
    groups = [
        {k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _rng_file(process_index: int) -> str:
    return f"rng_{process_index}.safetensors"


def _rng_state() -> dict[str, Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def save_training_state(
    accelerator: Accelerator,
    state_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    extra: dict[str, dict[str, Tensor]] | None = None,
    pending: bool = False,
) -> None:
    """Write the state of ``model`` (the prepared module), ``optimizer``, ``progress`` (JSON-able) and ``extra``
    (``{file stem: tensors}``) to ``state_dir``, atomically; every process calls it. ``pending``: keep it beside
    ``state_dir`` until :func:`commit_pending_state`.

    Raises :class:`ClspError` without touching ``state_dir`` when a weight, buffer or optimizer tensor is not
    finite on any process.
    """
    unwrapped = accelerator.unwrap_model(model)
    bad = non_finite_tensor(unwrapped, optimizer)
    bad_anywhere = accelerator.reduce(torch.tensor([bad is not None], device=accelerator.device).float(), "sum")
    if bad_anywhere.item():
        kept = "keeps the last good state" if state_dir.is_dir() else "was not written"
        raise ClspError(
            f"the weights became non-finite ({bad or 'on another process'}) at step {progress.get('step')}; "
            f"{state_dir} {kept}: lower the learning rate, or use mixed_precision=no, then rerun with --resume"
        )
    tmp = state_dir.with_name(f".{state_dir.name}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        _write_state_files(accelerator, tmp, unwrapped, optimizer, progress, extra)
    except OSError:  # disk full, read-only: leave no half-written folder; the last good state stays as it was
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        give_default_modes(tmp)
        shutil.rmtree(_pending(state_dir), ignore_errors=True)
        tmp.rename(_pending(state_dir))
    if not pending:
        commit_pending_state(accelerator, state_dir)
    accelerator.wait_for_everyone()


def _write_state_files(
    accelerator: Accelerator,
    tmp: Path,
    unwrapped: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    extra: dict[str, dict[str, Tensor]] | None,
) -> None:
    save_file(_rng_state(), tmp / _rng_file(accelerator.process_index))
    if accelerator.is_main_process:
        save_model(unwrapped, str(tmp / MODEL_FILE))
        tensors, meta = _optimizer_files(optimizer.state_dict())
        save_file(tensors, tmp / OPTIMIZER_TENSORS)
        (tmp / OPTIMIZER_JSON).write_text(json.dumps(meta), encoding="utf-8")
        if accelerator.scaler is not None:
            progress = {**progress, "grad_scaler": accelerator.scaler.state_dict()}
        (tmp / PROGRESS_FILE).write_text(json.dumps(progress), encoding="utf-8")
        for stem, values in (extra or {}).items():
            save_file({k: v.detach().cpu().contiguous() for k, v in values.items()}, tmp / f"{stem}.safetensors")


def _pending(state_dir: Path) -> Path:
    return state_dir.with_name(f".{state_dir.name}.pending")


def recover_state_swap(state_dir: Path) -> None:
    """Finish a state swap that an interruption cut between its two renames (``state`` renamed to ``.state.old``,
    the committed ``.state.pending`` not yet renamed to ``state``): the pending state becomes ``state``, as the
    commit meant. Without ``.state.old`` a lone pending state was never committed and is left alone."""
    old, pending = state_dir.with_name(f".{state_dir.name}.old"), _pending(state_dir)
    if state_dir.exists() or not old.is_dir():
        return
    if pending.is_dir():
        pending.rename(state_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.rename(state_dir)


def commit_pending_state(accelerator: Accelerator, state_dir: Path) -> None:
    """Swap a pending state (see :func:`save_training_state`) in as ``state_dir``; nothing if none is pending."""
    pending = _pending(state_dir)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and pending.is_dir():
        replace_folder(pending, state_dir)
    accelerator.wait_for_everyone()


def non_finite_loss(value: float, step: int, state_dir: Path, section: str) -> ClspError:
    """The error that stops a loop whose loss at ``step`` is ``value`` (NaN or inf); drops the pending state, whose
    weights produced that loss. ``section``: the config section to fix (``ssl``, ``diffusion``)."""
    shutil.rmtree(_pending(state_dir), ignore_errors=True)
    kept = "keeps the last good state" if state_dir.is_dir() else "was not saved yet"
    return ClspError(
        f"the loss became {value} at step {step}; {state_dir} {kept}: lower {section}.lr, or use "
        f"{section}.mixed_precision=no, then rerun with --resume"
    )


def load_training_state(
    accelerator: Accelerator,
    state_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, dict[str, Tensor]]]:
    """Restore what :func:`save_training_state` wrote into ``model`` and ``optimizer`` and the RNG; return the
    progress dict and the ``extra`` tensor files. Reads safetensors and JSON only; anything missing, truncated,
    tampered or of another shape is a :class:`ClspError` naming the file."""
    path = state_dir / MODEL_FILE
    fix = "restore the folder or start over with --overwrite"
    try:
        try:
            missing, unexpected = load_model(accelerator.unwrap_model(model), str(path), strict=False)
        except RuntimeError:  # torch's load_state_dict: tensors of other shapes
            missing, unexpected = ["(shapes differ)"], []
        if missing or unexpected:
            raise ClspError(
                f"{path}: holds another model ({len(missing)} missing, {len(unexpected)} unexpected keys or other "
                "shapes); resume with the settings it was made with or start over with --overwrite"
            )
        path = state_dir / OPTIMIZER_JSON
        meta = read_json_object(path, fix)
        path = state_dir / OPTIMIZER_TENSORS
        optimizer.load_state_dict(_optimizer_state(load_file(path), meta))
        path = state_dir / PROGRESS_FILE
        progress = read_json_object(path, fix)
        if accelerator.scaler is not None and "grad_scaler" in progress:
            accelerator.scaler.load_state_dict(progress["grad_scaler"])
        loaded = {}
        for stem in extra:
            path = state_dir / f"{stem}.safetensors"
            loaded[stem] = load_file(path)
        path = state_dir / _rng_file(accelerator.process_index)
        rng = load_file(path)
        torch.set_rng_state(rng["cpu"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state_all(
                [rng[f"cuda{i}"] for i in range(torch.cuda.device_count()) if f"cuda{i}" in rng]
            )
    except ClspError:
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClspError(
            f"{path}: unreadable resume state ({reason}); restore the folder or start over with --overwrite"
        ) from None
    return progress, loaded
