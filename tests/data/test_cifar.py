"""CIFAR readers against small files written in torchvision's on-disk format, read back by torchvision too."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import CIFAR10, CIFAR100

from clsp.config import DataConfig
from clsp.data import load_images
from clsp.data.cifar import LAYOUT, load_cifar_split
from clsp.errors import ClspError


def write_batch(path: Path, content: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=2)


def write_cifar(root: Path, source: str, per_file: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write random CIFAR batches the way the official archives lay them out; return images/labels per split."""
    rng = np.random.default_rng(seed)
    layout = LAYOUT[source]
    folder = root / layout["folder"]
    folder.mkdir(parents=True)
    num_classes = 10 if source == "cifar10" else 100
    truth = {}
    for split in ("train", "test"):
        images, labels = [], []
        for name in layout[split]:
            data = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
            batch_labels = rng.integers(0, num_classes, per_file).tolist()
            content = {
                "batch_label": name,
                "data": data,
                layout["labels"]: batch_labels,
                "filenames": ["x.png"] * per_file,
            }
            if source == "cifar100":
                content["coarse_labels"] = [y // 5 for y in batch_labels]
            write_batch(folder / name, content)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.extend(batch_labels)
        truth[split] = (np.concatenate(images), np.array(labels))
    meta_name, names_key = layout["meta"]
    write_batch(folder / meta_name, {names_key: [f"class{i}" for i in range(num_classes)]})
    return truth


def without_checksums(dataset_class: type) -> type:
    """torchvision's reader, with the official archives' MD5 sums dropped so our small files pass its check."""
    unchecked = {
        "train_list": [[name, None] for name, _ in dataset_class.train_list],
        "test_list": [[name, None] for name, _ in dataset_class.test_list],
        "meta": {**dataset_class.meta, "md5": None},
    }
    return type(f"Unchecked{dataset_class.__name__}", (dataset_class,), unchecked)


TorchvisionCIFAR10 = without_checksums(CIFAR10)
TorchvisionCIFAR100 = without_checksums(CIFAR100)


@pytest.mark.parametrize(("source", "reference"), [("cifar10", TorchvisionCIFAR10), ("cifar100", TorchvisionCIFAR100)])
def test_reads_what_torchvision_reads(tmp_path: Path, source: str, reference: type) -> None:
    truth = write_cifar(tmp_path, source, per_file=6, seed=hash(source) % 1000)
    for split in ("train", "test"):
        images = load_cifar_split(source, tmp_path, split)
        theirs = reference(str(tmp_path), train=split == "train")
        assert images.images.shape == (len(theirs), 32, 32, 3)
        np.testing.assert_array_equal(images.images, theirs.data)
        np.testing.assert_array_equal(images.labels, np.array(theirs.targets))
        np.testing.assert_array_equal(images.images, truth[split][0])
        assert images.class_names == tuple(theirs.classes)
    assert len(load_cifar_split(source, tmp_path, "train")) == 6 * len(LAYOUT[source]["train"])


def test_load_images_resizes_on_request(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", per_file=2, seed=0)
    cfg = DataConfig(source="cifar10", root=tmp_path, image_size=16)
    images = load_images(cfg, "test")
    assert images.images.shape == (2, 16, 16, 3)
    assert images.name == "cifar10/test"


def test_missing_files_say_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(ClspError) as caught:
        load_cifar_split("cifar100", tmp_path, "train")
    message = str(caught.value)
    assert str(tmp_path / "cifar-100-python") in message
    assert "cifar-100-python.tar.gz" in message and "--download" in message


def test_corrupt_batch_names_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", per_file=2, seed=1)
    victim = tmp_path / "cifar-10-batches-py" / "test_batch"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ClspError, match="test_batch: not a valid CIFAR python batch"):
        load_cifar_split("cifar10", tmp_path, "test")


def test_a_malicious_pickle_is_refused_not_run(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10", per_file=2, seed=2)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    write_batch(tmp_path / "cifar-10-batches-py" / "test_batch", {"data": Exploit()})
    with pytest.raises(ClspError, match="refusing to load"):
        load_cifar_split("cifar10", tmp_path, "test")
    assert not marker.exists()
