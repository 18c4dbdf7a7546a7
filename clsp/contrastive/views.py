"""The multi-view SSL dataset (method.md 3.1); with :class:`clsp.loop.GlobalBatchSampler` every batch is a
function of ``(seed, step, process)``.

Items are keyed by ``(epoch, index)`` and their random draws (the three augmentations and the candidate index)
come from a generator seeded with ``(seed, epoch, index)``. Two consequences: a resumed run sees exactly the
batches the uninterrupted run would have seen, and P processes with batch B see, together, exactly what one
process with batch P*B sees, whatever the number of DataLoader workers.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from clsp.errors import ClspError
from clsp.loop import derived_seed, seeded_cpu_rng
from clsp.positives.store import MANIFEST, PositiveStore

ThirdView = Literal["synthetic", "real", "none"]


class MultiViewDataset(Dataset):
    """``dataset[(epoch, i)]`` -> ``{"v1", "v2"[, "v3"], "label"}`` for training image i.

    ``v1``, ``v2``: two draws of ``transform`` on the real image; ``v3``: (``synthetic``) one more draw on stored
    candidate j, with j uniform in ``[0, min(num_candidates, k))`` and drawn anew on every access, or (``real``,
    the ablation) a third draw on the real image; absent for ``none`` (the baselines). Views are float
    ``[C, S, S]`` as ``transform`` makes them; ``label`` is an int64 class index, -1 for unlabelled data.

    ``images``: uint8 ``[N, H, W, C]``; ``labels``: int64 ``[N]`` or None.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        transform: Callable[[Tensor], Tensor],
        seed: int,
        third_view: ThirdView = "none",
        positives: PositiveStore | None = None,
        num_candidates: int = 1,
    ) -> None:
        if third_view == "synthetic" and positives is None:
            raise ValueError("third_view='synthetic' needs a positive store")
        self.images = images
        self.labels = labels
        self.transform = transform
        self.seed = seed
        self.third_view = third_view
        self.positives = positives
        self.num_candidates = min(num_candidates, positives.num_candidates) if positives is not None else 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor | int]:
        epoch, i = key
        real = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        seed = derived_seed(self.seed, epoch, i)
        # The augmentations draw from torch's global generator; seeding it here disturbs nothing else.
        with seeded_cpu_rng(seed):
            item: dict[str, Tensor | int] = {"v1": self.transform(real), "v2": self.transform(real)}
            if self.third_view == "real":
                item["v3"] = self.transform(real)
            elif self.third_view == "synthetic":
                j = int(np.random.default_rng(seed).integers(self.num_candidates))
                synthetic = torch.from_numpy(self.positives.candidate(i, j)).permute(2, 0, 1)
                item["v3"] = self.transform(synthetic)
        item["label"] = -1 if self.labels is None else int(self.labels[i])
        return item


def open_positives(path: Path, n: int, channels: int, dataset_fingerprint: str, what: str) -> PositiveStore:
    """Open the store at ``path`` (every shard re-hashed against the manifest's SHA-256) and refuse it unless it is
    complete and was made for ``what`` (N images with this fingerprint and channel count; its height and width may differ, as for
    STL-10's 64-px positives of 96-px images, since the crop resizes both)."""
    if not (Path(path) / MANIFEST).is_file():
        raise ClspError(
            f"ssl.positives: no positive store at {path}; run `clsp positives generate` first, pass --positives, "
            "or train a baseline with --set ssl.clsp_weight=0"
        )
    store = PositiveStore.open(path, check="full")
    store.check_matches(n, dataset_fingerprint, what)
    if store.image_shape[2] != channels:
        raise ClspError(
            f"{path}: positives have {store.image_shape[2]} channels but {what} has {channels}; "
            "generate positives for this dataset or point ssl.positives to the right store"
        )
    return store
