"""The multi-view SSL dataset (method.md 3.1); with :class:`clsp.loop.GlobalBatchSampler` every batch is a
function of ``(seed, step, process)``.

Items are keyed by ``(epoch, index)`` and their random draws (the three augmentations' uniforms and the candidate
index) come from generators seeded with ``(seed, epoch, index)``; the collate function applies the augmentations
to the whole batch from those draws. Two consequences: a resumed run sees exactly the batches the uninterrupted run
would have seen, and P processes with batch B see, together, exactly what one process with batch P*B sees, whatever
the number of DataLoader workers.
"""

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from clsp.data.augment import NUM_UNIFORMS, Augmentation
from clsp.errors import ClspError
from clsp.loop import derived_seed
from clsp.positives.store import MANIFEST, PositiveStore

ThirdView = Literal["synthetic", "real", "none"]
VIEWS = ("v1", "v2", "v3")


class MultiViewDataset(Dataset):
    """``dataset[(epoch, i)]`` -> the raw views of training image i and their random draws; :meth:`collate` turns a
    list of items into the batch ``{"v1", "v2"[, "v3"], "label"}``, augmenting each view batch at once.

    ``v1``, ``v2``: two draws of ``augmentation`` on the real image; ``v3``: (``synthetic``) one more draw on stored
    candidate j, with j uniform in ``[0, min(num_candidates, k))`` and drawn anew on every access, or (``real``,
    the ablation) a third draw on the real image; absent for ``none`` (the baselines). An item holds each view's
    uint8 ``[C, H, W]`` image, ``draws`` (float64 ``[views, NUM_UNIFORMS]``, see
    :class:`~clsp.data.augment.Augmentation`) and ``label`` (an int64 class index, -1 for unlabelled data); a
    collated view is float32 ``[B, C, S, S]`` as ``augmentation`` makes it.

    ``images``: uint8 ``[N, H, W, C]``; ``labels``: int64 ``[N]`` or None.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        augmentation: Augmentation,
        seed: int,
        third_view: ThirdView = "none",
        positives: PositiveStore | None = None,
        num_candidates: int = 1,
    ) -> None:
        if third_view == "synthetic" and positives is None:
            raise ValueError("third_view='synthetic' needs a positive store")
        self.images = images
        self.labels = labels
        self.augmentation = augmentation
        self.seed = seed
        self.third_view = third_view
        self.positives = positives
        self.num_candidates = min(num_candidates, positives.num_candidates) if positives is not None else 0
        self.views = VIEWS[: 2 if third_view == "none" else 3]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor | int]:
        epoch, i = key
        real = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        seed = derived_seed(self.seed, epoch, i)
        item: dict[str, Tensor | int] = {"v1": real, "v2": real}
        if self.third_view == "real":
            item["v3"] = real
        elif self.third_view == "synthetic":
            j = int(np.random.default_rng(seed).integers(self.num_candidates))
            item["v3"] = torch.from_numpy(self.positives.candidate(i, j)).permute(2, 0, 1)
        generator = torch.Generator().manual_seed(seed)
        item["draws"] = torch.rand(len(self.views), NUM_UNIFORMS, dtype=torch.float64, generator=generator)
        item["label"] = -1 if self.labels is None else int(self.labels[i])
        return item

    def collate(self, items: list[dict[str, Tensor | int]]) -> dict[str, Tensor]:
        """A list of items -> ``{"v1", "v2"[, "v3"]: float32 [B, C, S, S], "label": int64 [B]}`` (the DataLoader's
        ``collate_fn``; it runs in the DataLoader's workers)."""
        batch = default_collate(items)
        draws = batch.pop("draws")
        for n, view in enumerate(self.views):
            batch[view] = self.augmentation(batch[view], draws[:, n])
        return batch


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
