import errno
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from clsp.errors import ClspError
from clsp.positives import store as store_module
from clsp.positives.store import PositiveStore

N, K, SHAPE, SHARD = 10, 3, (4, 5, 3), 4


def make(root: Path, **changes) -> PositiveStore:
    header = dict(
        n=N, num_candidates=K, image_shape=SHAPE, dataset_fingerprint="abc", provenance={"seed": 0}, shard_size=SHARD
    )
    return PositiveStore.create(root, **{**header, **changes})


def fill(store: PositiveStore, data: np.ndarray, shards=None) -> None:
    for index in store.missing_shards() if shards is None else shards:
        rows = store.shard_rows(index)
        store.write_shard(index, data[rows.start : rows.stop])


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (N, K, *SHAPE), dtype=np.uint8)


def test_write_then_read_every_candidate(tmp_path: Path, data: np.ndarray) -> None:
    store = make(tmp_path)
    assert store.num_shards == 3 and store.missing_shards() == [0, 1, 2] and not store.is_complete
    fill(store, data)
    assert store.is_complete
    reopened = PositiveStore.open(tmp_path)
    for i in range(N):
        np.testing.assert_array_equal(reopened[i], data[i])
        for j in range(K):
            np.testing.assert_array_equal(reopened.candidate(i, j), data[i, j])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["n"] == N and manifest["image_shape"] == list(SHAPE) and len(manifest["shards"]) == 3
    assert manifest["shards"]["2"]["rows"] == 2
    with pytest.raises(IndexError):
        reopened[N]
    with pytest.raises(IndexError):
        reopened.candidate(0, K)


def test_unfinished_shard_is_reported_not_read(tmp_path: Path, data: np.ndarray) -> None:
    store = make(tmp_path)
    fill(store, data, shards=[1])
    np.testing.assert_array_equal(store[5], data[5])
    with pytest.raises(ClspError, match="shard 0 is not generated yet"):
        store[0]
    with pytest.raises(ClspError, match="2 of 3 shards are not generated"):
        store.check_matches(N, "abc", "the dataset")


def test_resume_keeps_finished_shards_and_refuses_other_settings(tmp_path: Path, data: np.ndarray) -> None:
    fill(make(tmp_path), data, shards=[0, 2])
    resumed = make(tmp_path)
    assert resumed.missing_shards() == [1]
    with pytest.raises(ClspError) as caught:
        make(tmp_path, provenance={"seed": 1, "sampler": {"num_steps": 20}}, num_candidates=4)
    assert str(caught.value) == (
        f"{tmp_path}: holds positives made with other settings (num_candidates: 3 -> 4; provenance.sampler: null -> "
        '{"num_steps": 20}; provenance.seed: 0 -> 1); set them back to reuse or finish that store, or use another '
        f"ssl.positives or run.output_dir, or delete {tmp_path} to start over"
    )
    fill(make(tmp_path / "nested", provenance={"sampler": {"num_steps": 7, "eta": 0.1}}), data)
    with pytest.raises(ClspError, match=r"\(provenance.sampler.num_steps: 7 -> 10\); set them back"):
        make(tmp_path / "nested", provenance={"sampler": {"num_steps": 10, "eta": 0.1}})


def test_verify_and_open_detect_truncated_and_tampered_shards(tmp_path: Path, data: np.ndarray) -> None:
    store = make(tmp_path)
    fill(store, data)
    assert store.verify() == []
    shard0, shard1 = tmp_path / "shard_00000.npy", tmp_path / "shard_00001.npy"
    shard0.write_bytes(shard0.read_bytes()[:-10])
    raw = bytearray(shard1.read_bytes())
    raw[-1] ^= 0xFF
    shard1.write_bytes(bytes(raw))
    problems = PositiveStore(tmp_path, json.loads((tmp_path / "manifest.json").read_text())).verify()
    assert [p.shard for p in problems] == [0, 1]
    assert "bytes" in problems[0].problem and "SHA-256" in problems[1].problem
    with pytest.raises(ClspError, match=r"shard_00000.npy: .*2 problem"):
        PositiveStore.open(tmp_path)
    (tmp_path / "shard_00002.npy").unlink()
    with pytest.raises(ClspError, match="file missing|problem"):
        PositiveStore.open(tmp_path, check="size")


def test_check_matches_refuses_another_dataset(tmp_path: Path, data: np.ndarray) -> None:
    store = make(tmp_path)
    fill(store, data)
    store.check_matches(N, "abc", "digits/train")
    for n, fingerprint, needle in [
        (N + 1, "abc", "made for N 10, but digits/train has 11"),
        (N, "xyz", "dataset fingerprint abc, but digits/train has xyz"),
    ]:
        with pytest.raises(ClspError, match=needle):
            store.check_matches(n, fingerprint, "digits/train")


def test_damaged_manifest(tmp_path: Path) -> None:
    with pytest.raises(ClspError, match="no manifest.json"):
        PositiveStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.raises(ClspError, match="not valid JSON"):
        PositiveStore.open(tmp_path)


def test_a_failing_write_leaves_the_manifest_consistent(
    tmp_path: Path, data: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make(tmp_path)
    fill(store, data, shards=[0])
    before = (tmp_path / "manifest.json").read_bytes()

    def disk_full(path, array, allow_pickle):  # writes part of the file, then the disk is full
        Path(path).write_bytes(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.np, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        store.write_shard(1, data[4:8])
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "manifest.json.lock", "shard_00000.npy"]

    def manifest_write_fails(path, text):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(store_module, "atomic_write_text", manifest_write_fails)
    with pytest.raises(OSError, match="I/O error"):
        store.write_shard(1, data[4:8])
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_bytes() == before
    resumed = make(tmp_path)
    assert resumed.missing_shards() == [1, 2]  # the orphan shard file is not trusted; it is written again
    fill(resumed, data)
    assert PositiveStore.open(tmp_path).verify() == []


def _write_one(args: tuple[str, int]) -> None:
    root, index = args
    store = PositiveStore.open(root, check="none")
    rows = store.shard_rows(index)
    store.write_shard(index, np.full((len(rows), K, *SHAPE), index, dtype=np.uint8))


def test_processes_finishing_shards_at_once_lose_no_manifest_entry(tmp_path: Path) -> None:
    make(tmp_path, n=40, shard_size=2)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_write_one, [(str(tmp_path), i) for i in range(20)])
    store = PositiveStore.open(tmp_path)
    assert store.is_complete
    assert [int(store.candidate(i, 0)[0, 0, 0]) for i in range(0, 40, 2)] == list(range(20))


def test_dataloader_workers_read_the_store(tmp_path: Path, data: np.ndarray) -> None:
    store = make(tmp_path)
    fill(store, data)
    store[0]  # opens a memory map in the parent; workers must still read correctly

    class Candidates(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return N

        def __getitem__(self, i: int) -> np.ndarray:
            return store.candidate(i, i % K)

    loader = torch.utils.data.DataLoader(Candidates(), batch_size=3, num_workers=2)
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, np.stack([data[i, i % K] for i in range(N)]))


def test_import_reference_layout(tmp_path: Path, data: np.ndarray) -> None:
    reference = tmp_path / "synthetic_cifar10_ddim_interpolation_0.1_3_candidates.npy"
    np.save(reference, data)

    def import_to(root: Path, size: int = N, channels: int = 3, array: Path = reference) -> PositiveStore:
        return PositiveStore.import_array(
            array, root, dataset_size=size, channels=channels, dataset_fingerprint="abc", provenance={}, shard_size=4
        )

    store = import_to(tmp_path / "store")
    assert store.is_complete and store.provenance["imported_from"] == reference.name
    with pytest.raises(ClspError, match="holds positives for 10 images but the dataset has 11"):
        import_to(tmp_path / "s1", size=11)
    assert not (tmp_path / "s1").exists()
    with pytest.raises(ClspError, match=r"positives have 3 channels but the dataset's images have 1; import positives"):
        import_to(tmp_path / "grey", channels=1)
    assert not (tmp_path / "grey").exists()
    reopened = PositiveStore.open(tmp_path / "store")
    np.testing.assert_array_equal(np.stack([reopened[i] for i in range(N)]), data)
    np.save(tmp_path / "bad.npy", data[..., 0].astype(np.float32))
    with pytest.raises(ClspError, match=r"bad.npy: expected uint8 \[N, k, H, W, C\]"):
        import_to(tmp_path / "s2", array=tmp_path / "bad.npy")


def _tamper(root: Path, change) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("named", ["../other/shard_00000.npy", "/etc/hostname", "shard_00001.npy", "", 7])
def test_a_manifest_cannot_point_verify_at_another_file(tmp_path: Path, data: np.ndarray, named) -> None:
    # The attack: zero the real shard, point the manifest at a good copy elsewhere (hash and size match it).
    store_dir, elsewhere = tmp_path / "store", tmp_path / "other"
    fill(make(store_dir), data)
    elsewhere.mkdir()
    (elsewhere / "shard_00000.npy").write_bytes((store_dir / "shard_00000.npy").read_bytes())
    np.save(store_dir / "shard_00000.npy", np.zeros_like(data[:SHARD]))
    _tamper(store_dir, lambda m: m["shards"]["0"].update(file=named))
    for check in ("full", "size", "none"):
        with pytest.raises(ClspError, match=r"manifest.json: field .*file.*generate it again") as e:
            PositiveStore.open(store_dir, check=check)
        assert "\n" not in str(e.value)


def test_verify_hashes_exactly_the_file_the_reader_opens(tmp_path: Path, data: np.ndarray) -> None:
    fill(make(tmp_path), data)
    np.save(tmp_path / "shard_00001.npy", np.zeros_like(data[SHARD : 2 * SHARD]))  # same size, other content
    problems = PositiveStore.open(tmp_path, check="none").verify(full=True)
    assert [(p.shard, "SHA-256" in p.problem) for p in problems] == [(1, True)]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(shard_size=0), "'shard_size' is 0, expected at least 1"),
        (lambda m: m.update(n="1347"), "'n' is \"1347\", expected an integer"),
        (lambda m: m.update(n=True), "'n' is true, expected an integer"),
        (lambda m: m.update(image_shape=[4, 5]), "'image_shape' is \\[4, 5\\], expected \\[H, W, C\\]"),
        (lambda m: m.pop("shards"), "'shards' is missing"),
        (lambda m: m.update(shards=[1, 2]), "'shards' is \\[1, 2\\], expected an object"),
        (lambda m: m["shards"].update({"9": m["shards"]["0"]}), "shards entry '9' is not a shard of this store"),
        (lambda m: m["shards"]["0"].update(bytes="12"), "'bytes' is \"12\", expected an integer"),
    ],
)
def test_every_malformed_manifest_field_is_one_line(tmp_path: Path, data: np.ndarray, change, match) -> None:
    fill(make(tmp_path), data)
    _tamper(tmp_path, change)
    with pytest.raises(ClspError, match=match) as e:
        PositiveStore.open(tmp_path)
    assert "\n" not in str(e.value) and "manifest.json" in str(e.value)


@pytest.mark.parametrize(("content", "match"), [(b"[1, 2]", "JSON list, not an object"), (b"\xff\xfe{", "not UTF-8")])
def test_a_manifest_that_is_not_an_object_or_not_text_is_one_line(tmp_path: Path, data: np.ndarray, content, match):
    fill(make(tmp_path), data)
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ClspError, match=match):
        PositiveStore.open(tmp_path)


def test_identity_changes_with_any_shard_or_the_header(tmp_path: Path, data: np.ndarray) -> None:
    a, b = make(tmp_path / "a"), make(tmp_path / "b")
    fill(a, data)
    fill(b, data)
    assert a.identity == b.identity  # the same positives wherever they live
    changed = data.copy()
    changed[9, 0, 0, 0, 0] ^= 1
    b.write_shard(2, changed[8:10])
    assert PositiveStore.open(tmp_path / "b").identity != a.identity
    c = make(tmp_path / "c", provenance={"seed": 1})
    fill(c, data)
    assert c.identity != a.identity


def test_a_full_disk_while_writing_a_shard_leaves_the_store_as_it_was(tmp_path: Path, data: np.ndarray, monkeypatch):
    import errno

    store = make(tmp_path)
    fill(store, data, shards=[0])
    manifest = (tmp_path / "manifest.json").read_text()

    def full(file, array, allow_pickle=False):  # a full disk cannot be made here without root mounts
        Path(file).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(store_module.np, "save", full)
    with pytest.raises(OSError):
        store.write_shard(1, data[SHARD : 2 * SHARD])
    monkeypatch.undo()
    assert (tmp_path / "manifest.json").read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "manifest.json.lock", "shard_00000.npy"]
    assert PositiveStore.open(tmp_path).missing_shards() == [1, 2]  # generated again on the next run
