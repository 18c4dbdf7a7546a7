"""Data at scale: decode throughput of the decoded-image cache, its reopen time, and the peak memory of stages that
read it, on a generated folder of noise JPEGs (issue 21).

    python bench/data_scale.py --root /tmp/scale --images 150000 --size 96 make
    python bench/data_scale.py --root /tmp/scale --size 96 --workers 1,2 decode
    python bench/data_scale.py --root /tmp/scale --size 96 [--cold] reopen
    python bench/data_scale.py --root /tmp/scale --size 96 memory -- clsp data show {config}

``make`` writes ``--images`` random RGB JPEGs (quality 90) in 10 class folders, seeded, skipping files that exist.
``decode`` builds a fresh cache entry with each worker count (images/s of the first decode), then opens it again in a
new process (seconds of ``load_images``, the interpreter and imports excluded); ``reopen`` opens ``<root>/cache``'s
entry again, ``--cold`` after dropping the kernel's caches (root only). ``memory`` runs a command (``{config}``
is a config for the folder, cache under ``<root>/cache``) and samples every 0.05 s the proportional set size of its
process tree from /proc: peak total PSS, and peak anonymous PSS (private memory; the rest is file pages, mostly of the
mapped cache, which the kernel reclaims under pressure) beside the decoded array's size.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CLASSES = 10


def _write_images(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    root, start, stop, size = job
    for i in range(start, stop):
        path = root / "images" / f"class{i % CLASSES}" / f"{i:07d}.jpg"
        if not path.exists():
            pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)


def make(root: Path, images: int, size: int) -> None:
    for c in range(CLASSES):
        (root / "images" / f"class{c}").mkdir(parents=True, exist_ok=True)
    step = 2000
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_images, [(root, s, min(images, s + step), size) for s in range(0, images, step)])
    print(f"{images} JPEGs in {root / 'images'}")


def config_text(root: Path, size: int) -> str:
    return (
        f"run: {{output_dir: {root / 'runs' / 'scale'}}}\n"
        f"data: {{source: folder, root: {root / 'images'}, image_size: {size}, cache_dir: {root / 'cache'}}}\n"
    )


def decode(root: Path, size: int, workers: list[int]) -> None:
    from clsp.config import DataConfig
    from clsp.data import load_images

    rows = []
    for count in workers:
        cache = root / f"cache-{count}"
        shutil.rmtree(cache, ignore_errors=True)
        cfg = DataConfig(source="folder", root=root / "images", image_size=size, cache_dir=cache, decode_workers=count)
        started = time.perf_counter()
        images = load_images(cfg, "all")
        seconds = time.perf_counter() - started
        reopen = _reopen(root, size, cache)
        rows.append(
            {
                "workers": count,
                "images": len(images),
                "decoded_gb": images.images.nbytes / 1e9,
                "first_decode_s": seconds,
                "images_per_s": len(images) / seconds,
                "reopen_s": reopen,
            }
        )
        print(json.dumps(rows[-1]))
    shutil.rmtree(root / f"cache-{workers[0]}", ignore_errors=True)


REOPEN = """
import sys, time
from pathlib import Path
from clsp.config import DataConfig
from clsp.data import load_images
cfg = DataConfig(source="folder", root=Path(sys.argv[1]), image_size=int(sys.argv[2]), cache_dir=Path(sys.argv[3]))
started = time.perf_counter()
load_images(cfg, "all")
print(time.perf_counter() - started)
"""


def _reopen(root: Path, size: int, cache: Path) -> float:
    """Seconds of ``load_images`` on the entry in ``cache``, in a new process (interpreter and imports excluded)."""
    command = [sys.executable, "-c", REOPEN, str(root / "images"), str(size), str(cache)]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-1])


def reopen(root: Path, size: int, cold: bool) -> None:
    """The second open of ``<root>/cache``'s entry; ``cold``: after dropping the kernel's page, dentry and inode
    caches (root only), as after a reboot."""
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    print(json.dumps({"cold": cold, "reopen_s": _reopen(root, size, root / "cache")}))


def _tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) in bytes of ``pid`` and its descendants, from /proc/*/smaps_rollup. Proportional set
    size shares a page among the processes that map it, so forked DataLoader workers and the mapped cache are
    counted once, not once per process as RSS would."""
    tree, parents = {pid}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    grown = True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grown = True
    total = anon = 0
    for member in tree:
        try:
            rows = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in rows[1:] if line.endswith("kB")}
        total += fields.get("Pss", 0)
        anon += fields.get("Pss_Anon", 0)
    return total, anon


def memory(root: Path, size: int, command: list[str]) -> None:
    config = root / "scale.yaml"
    config.write_text(config_text(root, size))
    command = [part.replace("{config}", str(config)) for part in command]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    peak = peak_anon = 0
    while process.poll() is None:
        total, anon = _tree_memory(process.pid)
        peak, peak_anon = max(peak, total), max(peak_anon, anon)
        time.sleep(0.05)
    split = command[command.index("--split") + 1] if "--split" in command else "train"
    decoded = sum(  # the size of the entry the command read: its split's
        (meta.parent / "images.npy").stat().st_size
        for meta in (root / "cache").glob("*/meta.json")
        if json.loads(meta.read_text())["name"].endswith(f"/{split}")
    )
    print(
        json.dumps(
            {
                "command": " ".join(command),
                "returncode": process.returncode,
                "seconds": time.perf_counter() - started,
                "peak_pss_gb": peak / 1e9,
                "peak_anon_pss_gb": peak_anon / 1e9,
                "decoded_gb": decoded / 1e9,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("make", "decode", "reopen", "memory"))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--images", type=int, default=150_000)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", default="1,2", help="decode: worker counts, comma-separated")
    parser.add_argument("--cold", action="store_true", help="reopen: drop the kernel's caches first (root only)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="memory: -- then the command ({config} is replaced)")
    args = parser.parse_args()
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.action == "make":
        make(args.root, args.images, args.size)
    elif args.action == "decode":
        decode(args.root, args.size, [int(w) for w in args.workers.split(",")])
    elif args.action == "reopen":
        reopen(args.root, args.size, args.cold)
    else:
        memory(args.root, args.size, args.command)


if __name__ == "__main__":
    main()
