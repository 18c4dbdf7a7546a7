"""The decoded-image cache on real PNG folders: reuse, invalidation, a broken entry rebuilt, parallel decoding and
two processes asking for one entry at once."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clsp.config import DataConfig, config_from_dict
from clsp.data import ImageRows, load_images
from clsp.data.pixels import content_fingerprint

REPO = Path(__file__).resolve().parents[2]


def write_folder(root: Path, count: int, seed: int = 0) -> None:
    """``count`` random 10x8 RGB PNGs in two class sub-folders."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = root / ("a", "b")[i % 2] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(path)


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_a_split_is_decoded_once_then_mapped_and_a_changed_file_rebuilds_it(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 12)
    cfg = DataConfig(source="folder", root=tmp_path / "images", cache_dir=tmp_path / "cache", image_size=8)
    fresh = load_images(cfg.model_copy(update={"cache_dir": None}), "train")
    first = load_images(cfg, "train")
    assert isinstance(first.images, ImageRows) and first.images.path is not None  # mapped
    assert isinstance(fresh.images, np.ndarray)  # no cache folder: decoded into memory
    np.testing.assert_array_equal(first.images, fresh.images)
    assert (first.labels.tolist(), first.files, first.class_names) == (fresh.labels.tolist(), fresh.files, ("a", "b"))
    assert first.fingerprint == fresh.fingerprint == content_fingerprint(np.array(fresh.images), fresh.labels)
    (entry,) = entries(tmp_path / "cache")
    built = (entry / "images.npy").stat()
    again = load_images(cfg, "train")
    assert again.images.path == first.images.path and again.fingerprint == first.fingerprint
    assert (entry / "images.npy").stat().st_mtime_ns == built.st_mtime_ns  # mapped, not written again
    target = tmp_path / "images" / again.files[0]
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(target)
    os.utime(target, ns=(built.st_mtime_ns + 10**9,) * 2)  # a changed file: its size or mtime differ
    changed = load_images(cfg, "train")
    assert len(entries(tmp_path / "cache")) == 2 and changed.fingerprint != fresh.fingerprint
    assert (changed.images[0] == 0).all()


def test_a_truncated_entry_is_rebuilt_with_a_warning(tmp_path: Path, capsys) -> None:
    write_folder(tmp_path / "images", 6)
    cfg = DataConfig(source="folder", root=tmp_path / "images", cache_dir=tmp_path / "cache")
    expected = np.array(load_images(cfg, "all").images)  # a copy: the mapped file is cut below
    (entry,) = entries(tmp_path / "cache")
    data = (entry / "images.npy").read_bytes()
    (entry / "images.npy").write_bytes(data[: len(data) // 2])
    again = load_images(cfg, "all")
    assert "broken cache entry" in capsys.readouterr().err
    np.testing.assert_array_equal(again.images, expected)
    assert (entry / "images.npy").stat().st_size == len(data)


def test_two_workers_decode_what_one_does(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 300)  # two chunks: the worker pool runs
    cfg = DataConfig(source="folder", root=tmp_path / "images", cache_dir=tmp_path / "one", decode_workers=1)
    one = load_images(cfg, "all")
    two = load_images(cfg.model_copy(update={"cache_dir": tmp_path / "two", "decode_workers": 2}), "all")
    np.testing.assert_array_equal(one.images, two.images)
    assert one.fingerprint == two.fingerprint and one.files == two.files


SLOW_BUILDER = """
import sys, time
from pathlib import Path
from clsp.config import DataConfig
from clsp.data import ImageRows, load_images
from clsp.data.folder import FileDecoder
decode = FileDecoder.__call__
def slow(self, files):  # decodes only once the test says the other process is waiting
    deadline = time.monotonic() + 120
    while not Path(sys.argv[4]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return decode(self, files)
def refuse(self, files):
    raise SystemExit("decoded although another process built the entry")
FileDecoder.__call__ = slow if sys.argv[1] == "build" else refuse
cfg = DataConfig(source="folder", root=sys.argv[2], cache_dir=sys.argv[3], decode_workers=1)
print(load_images(cfg, "all").fingerprint)
"""


def test_of_two_processes_one_builds_and_the_other_waits_then_maps(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 300)  # 2 chunks
    cache, release, waiter_log = tmp_path / "cache", tmp_path / "release", tmp_path / "waiter.err"
    args = [str(tmp_path / "images"), str(cache), str(release)]
    run = {"stdout": subprocess.PIPE, "text": True, "cwd": REPO}
    builder = subprocess.Popen([sys.executable, "-c", SLOW_BUILDER, "build", *args], stderr=subprocess.PIPE, **run)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".building") for p in cache.glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    with waiter_log.open("w") as err:
        waiter = subprocess.Popen([sys.executable, "-c", SLOW_BUILDER, "wait", *args], stderr=err, **run)
        deadline = time.monotonic() + 60  # the builder holds the entry until the waiter says it waits
        while "waiting for another process to finish decoding" not in waiter_log.read_text():
            assert time.monotonic() < deadline and waiter.poll() is None, waiter_log.read_text()
            time.sleep(0.05)
        release.touch()
        built, waited = builder.communicate(timeout=120), waiter.communicate(timeout=120)
    assert builder.returncode == 0 and waiter.returncode == 0, (built[1], waiter_log.read_text())
    assert built[0].split() == waited[0].split() and len(entries(cache)) == 1


def test_a_loaded_config_caches_beside_the_runs_and_the_setting_is_not_a_stage_setting(tmp_path: Path) -> None:
    from clsp.demo import stage_settings

    cfg = config_from_dict(
        {"run": {"output_dir": str(tmp_path / "runs" / "x")}, "data": {"source": "folder", "root": "f"}}
    )
    assert cfg.data.cache_dir == tmp_path / "runs" / "data-cache"
    assert config_from_dict({}).data.cache_dir is None  # digits: nothing to decode
    assert "cache_dir" not in stage_settings(cfg, ["data"], tmp_path)["data"]


def test_summarising_a_mapped_split_holds_a_few_chunks_not_the_array(tmp_path: Path, monkeypatch) -> None:
    import tracemalloc

    from clsp.data import pixels

    write_folder(tmp_path / "images", 400)
    cfg = DataConfig(source="folder", root=tmp_path / "images", cache_dir=tmp_path / "cache", image_size=32)
    load_images(cfg, "all")  # build the entry
    monkeypatch.setattr(pixels, "STATS_CHUNK_PIXELS", 32 * 32 * 2)  # 200 chunks (float64: 3 chunks ~ 12 %)
    tracemalloc.start()
    images = load_images(cfg, "all")
    rows = images.summary()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert images.images.nbytes == 400 * 32 * 32 * 3 and peak < images.images.nbytes / 4, peak
    assert rows["fingerprint"] == content_fingerprint(np.array(images.images), images.labels)


def test_decode_workers_that_cannot_start_are_one_line_not_a_hang(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 300)
    script = (  # from stdin: spawned workers cannot import a main module, so they die at start
        "from pathlib import Path\nfrom clsp.config import DataConfig\nfrom clsp.data import load_images\n"
        "from clsp.errors import ClspError\ntry:\n"
        f"    load_images(DataConfig(source='folder', root=Path('{tmp_path / 'images'}'), "
        f"cache_dir=Path('{tmp_path / 'cache'}'), decode_workers=2), 'all')\n"
        "except ClspError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "the image decode workers stopped" in result.stdout and "data.decode_workers=1" in result.stdout
    assert not entries(tmp_path / "cache")  # nothing half-built is left as an entry
