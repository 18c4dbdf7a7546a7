"""The synthetic-positive store: uint8 ``[N, k, H, W, C]`` in ``.npy`` shards plus a ``manifest.json``.

Layout of a store folder::

    manifest.json        header (N, k, image shape, shard size, dataset fingerprint, provenance) and
                         the finished shards with their SHA-256
    shard_00000.npy      rows [0, shard_size) as uint8 [rows, k, H, W, C]
    shard_00001.npy      ...

A shard is written to a temporary file, fsynced and renamed, and only then entered into the manifest, which is
itself replaced atomically under a file lock (several processes may finish shards at once). A reader therefore
never sees a partial shard, and an interrupted or failed write leaves the manifest as it was: the shard is simply
generated again on the next run.
"""

import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clsp.atomic import atomic_write, atomic_write_text, file_sha256
from clsp.differences import describe_differences, field_differences
from clsp.errors import ClspError
from clsp.json_files import json_field, plain_file_name, read_json_object

FORMAT = "clsp-positives/1"
MANIFEST = "manifest.json"
HEADER_FIELDS = ("n", "num_candidates", "image_shape", "shard_size", "dataset_fingerprint", "provenance")


def shard_file_name(index: int) -> str:
    return f"shard_{index:05d}.npy"


@dataclass(frozen=True)
class ShardProblem:
    """One finding of :meth:`PositiveStore.verify`."""

    shard: int
    problem: str


class PositiveStore:
    """Random access to the k synthetic positives of every training image, memory-mapped shard by shard.

    Open an existing store with :meth:`open`; start or resume one with :meth:`create`.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self._manifest = manifest
        self._shards: dict[int, np.ndarray] = {}

    # -- header ------------------------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self._manifest["n"]

    @property
    def num_candidates(self) -> int:
        return self._manifest["num_candidates"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)``."""
        return tuple(self._manifest["image_shape"])  # type: ignore[return-value]

    @property
    def shard_size(self) -> int:
        return self._manifest["shard_size"]

    @property
    def dataset_fingerprint(self) -> str:
        return self._manifest["dataset_fingerprint"]

    @property
    def provenance(self) -> dict[str, Any]:
        """How the positives were made: UNet hash, sampler settings, seed, dataset name."""
        return self._manifest["provenance"]

    @property
    def num_shards(self) -> int:
        return -(-self.n // self.shard_size)

    def shard_rows(self, index: int) -> range:
        """Dataset indices held by shard ``index``."""
        return range(index * self.shard_size, min(self.n, (index + 1) * self.shard_size))

    def finished_shards(self) -> list[int]:
        return sorted(int(i) for i in self._manifest["shards"])

    def shard_sha256(self, index: int) -> str:
        """The SHA-256 the manifest records for finished shard ``index``."""
        return self._manifest["shards"][str(index)]["sha256"]

    @property
    def identity(self) -> str:
        """SHA-256 of the header and every finished shard's SHA-256: another store, or one replaced in place, has
        another identity. SSL runs record it (``backbone.json``, the resume state) and check it on ``--resume``."""
        content = {key: self._manifest[key] for key in HEADER_FIELDS}
        content["shards"] = {k: v["sha256"] for k, v in sorted(self._manifest["shards"].items())}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def missing_shards(self) -> list[int]:
        finished = set(self.finished_shards())
        return [i for i in range(self.num_shards) if i not in finished]

    @property
    def is_complete(self) -> bool:
        return len(self._manifest["shards"]) == self.num_shards

    def __len__(self) -> int:
        return self.n

    # -- create / open -----------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        n: int,
        num_candidates: int,
        image_shape: tuple[int, int, int],
        dataset_fingerprint: str,
        provenance: dict[str, Any],
        shard_size: int,
    ) -> "PositiveStore":
        """Start a store in ``root``, or reopen the one there if it has the same header (to resume it).

        A store in ``root`` with another header (other dataset, N, shape, UNet or sampler settings) is refused.
        """
        root = Path(root)
        header = {
            "n": int(n),
            "num_candidates": int(num_candidates),
            "image_shape": [int(s) for s in image_shape],
            "shard_size": int(shard_size),
            "dataset_fingerprint": dataset_fingerprint,
            "provenance": json.loads(json.dumps(provenance)),
        }
        if min(n, num_candidates, shard_size, *image_shape) < 1:
            raise ValueError(f"every size must be positive, got {header}")
        if (root / MANIFEST).is_file():
            existing = cls.open(root, check="size")
            changed = [d for key in HEADER_FIELDS for d in field_differences(existing._manifest[key], header[key], key)]
            if changed:
                raise ClspError(
                    f"{root}: holds positives made with other settings ({describe_differences(changed)}); set them back to "
                    f"reuse or finish that store, or use another ssl.positives or run.output_dir, or delete {root} to start over"
                )
            return existing
        root.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, **header, "dtype": "uint8", "shards": {}}
        atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
        return cls(root, manifest)

    @classmethod
    def open(cls, root: str | Path, check: str = "full") -> "PositiveStore":
        """Open the store in ``root``.

        ``check="full"`` re-hashes every finished shard (detects truncation and tampering; ~1 s per GB);
        ``"size"`` only compares file sizes and headers; ``"none"`` trusts the manifest.
        """
        root = Path(root)
        manifest = cls._read_manifest(root)
        store = cls(root, manifest)
        if check != "none":
            problems = store.verify(full=check == "full")
            if problems:
                first = problems[0]
                raise ClspError(
                    f"{root / shard_file_name(first.shard)}: {first.problem} ({len(problems)} problem(s) in all); "
                    f"run `clsp positives verify {root}` for the list, delete the bad shards and generate again"
                )
        return store

    @staticmethod
    def _read_manifest(root: Path) -> dict[str, Any]:
        """The manifest after checking every field the store reads, so a damaged or tampered one is one line."""
        path = root / MANIFEST
        if not path.is_file():
            raise ClspError(f"{root}: no {MANIFEST}; point to a folder written by `clsp positives generate`")
        fix = f"the store is damaged: delete {root} and generate it again"
        manifest = read_json_object(path, fix)
        if manifest.get("format") != FORMAT:
            raise ClspError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; regenerate the store")
        for name in ("n", "num_candidates", "shard_size"):
            json_field(manifest, name, int, path, fix, minimum=1)
        shape = json_field(manifest, "image_shape", list, path, fix)
        if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ClspError(f"{path}: field 'image_shape' is {shape}, expected [H, W, C] of positive integers; {fix}")
        json_field(manifest, "dataset_fingerprint", str, path, fix)
        json_field(manifest, "provenance", dict, path, fix)
        num_shards = -(-manifest["n"] // manifest["shard_size"])
        for key, record in json_field(manifest, "shards", dict, path, fix).items():
            if not key.isdigit() or int(key) >= num_shards or not isinstance(record, dict):
                raise ClspError(
                    f"{path}: shards entry {key!r} is not a shard of this store (0..{num_shards - 1}); {fix}"
                )
            where = f"shards.{key}."
            expected = shard_file_name(int(key))
            if plain_file_name(record.get("file"), path, where + "file", fix) != expected:
                raise ClspError(
                    f"{path}: field {where}file is {record['file']!r}, but shard {key} is {expected}; {fix}"
                )
            json_field(record, "bytes", int, path, fix, minimum=0)
            json_field(record, "sha256", str, path, fix)
        return manifest

    # -- checks ------------------------------------------------------------------------------------------------
    def expected_shard_shape(self, index: int) -> tuple[int, ...]:
        return (len(self.shard_rows(index)), self.num_candidates, *self.image_shape)

    def verify(self, full: bool = True) -> list[ShardProblem]:
        """Check every finished shard against the manifest: file present, size, header shape and dtype, and
        (``full``) the SHA-256 of the file. Returns the problems found (empty when all is well)."""
        problems = []
        for index in self.finished_shards():
            record = self._manifest["shards"][str(index)]
            path = self.root / shard_file_name(index)  # the file the reader opens; the manifest must name it
            if not path.is_file():
                problems.append(ShardProblem(index, "file missing"))
                continue
            if path.stat().st_size != record["bytes"]:
                problems.append(ShardProblem(index, f"{path.stat().st_size} bytes, manifest says {record['bytes']}"))
                continue
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as e:
                problems.append(ShardProblem(index, f"not a readable .npy file ({e})"))
                continue
            if array.shape != self.expected_shard_shape(index) or array.dtype != np.uint8:
                problems.append(
                    ShardProblem(
                        index, f"holds {array.dtype} {array.shape}, expected uint8 {self.expected_shard_shape(index)}"
                    )
                )
            elif full and file_sha256(path) != record["sha256"]:
                problems.append(ShardProblem(index, "SHA-256 differs from the manifest (the file was changed)"))
        return problems

    def check_matches(self, n: int, dataset_fingerprint: str, what: str) -> None:
        """Refuse the store unless it is complete and was made for a dataset with this N and fingerprint."""
        for key, actual, expected in (
            ("N", self.n, n),
            ("dataset fingerprint", self.dataset_fingerprint, dataset_fingerprint),
        ):
            if actual != expected:
                raise ClspError(
                    f"{self.root}: positives were made for {key} {actual}, but {what} has {expected}; "
                    "generate positives for this dataset (clsp positives generate) or point to the right store"
                )
        if not self.is_complete:
            missing = self.missing_shards()
            raise ClspError(
                f"{self.root}: {len(missing)} of {self.num_shards} shards are not generated yet (first: {missing[0]}); "
                "rerun clsp positives generate --resume to finish them"
            )

    # -- write -------------------------------------------------------------------------------------------------
    @contextmanager
    def _manifest_lock(self) -> Iterator[None]:
        with open(self.root / (MANIFEST + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def write_shard(self, index: int, positives: np.ndarray) -> None:
        """Write shard ``index`` (uint8 ``[rows, k, H, W, C]`` for the dataset indices :meth:`shard_rows` gives)
        atomically, then record it with its SHA-256 in the manifest."""
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} out of range [0, {self.num_shards})")
        expected = self.expected_shard_shape(index)
        if positives.shape != expected or positives.dtype != np.uint8:
            raise ValueError(f"shard {index} must be uint8 {expected}, got {positives.dtype} {positives.shape}")
        path = self.root / shard_file_name(index)
        atomic_write(path, lambda tmp: np.save(tmp, np.ascontiguousarray(positives), allow_pickle=False))
        record = {"file": path.name, "rows": expected[0], "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        with self._manifest_lock():
            manifest = self._read_manifest(self.root)  # other processes may have added shards meanwhile
            manifest["shards"][str(index)] = record
            atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
        self._manifest = manifest
        self._shards.pop(index, None)

    # -- read --------------------------------------------------------------------------------------------------
    def _shard(self, index: int) -> np.ndarray:
        if index not in self._shards:
            if str(index) not in self._manifest["shards"]:
                raise ClspError(
                    f"{self.root}: shard {index} is not generated yet; rerun clsp positives generate --resume to finish it"
                )
            self._shards[index] = np.load(self.root / shard_file_name(index), mmap_mode="r", allow_pickle=False)
        return self._shards[index]

    def __getitem__(self, i: int) -> np.ndarray:
        """All k candidates of dataset index ``i``: uint8 ``[k, H, W, C]`` (a copy)."""
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range [0, {self.n})")
        return np.array(self._shard(i // self.shard_size)[i % self.shard_size])

    def candidate(self, i: int, j: int) -> np.ndarray:
        """Candidate ``j`` of dataset index ``i``: uint8 ``[H, W, C]`` (a copy)."""
        if not 0 <= j < self.num_candidates:
            raise IndexError(f"candidate {j} out of range [0, {self.num_candidates})")
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range [0, {self.n})")
        return np.array(self._shard(i // self.shard_size)[i % self.shard_size, j])

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with spawn get a copy without open memory maps; they reopen lazily.
        return {**self.__dict__, "_shards": {}}

    # -- import ------------------------------------------------------------------------------------------------
    @classmethod
    def import_array(
        cls,
        array_path: str | Path,
        root: str | Path,
        *,
        dataset_size: int,
        channels: int,
        dataset_fingerprint: str,
        provenance: dict[str, Any],
        shard_size: int,
    ) -> "PositiveStore":
        """Import the reference layout, one ``.npy`` of uint8 ``[N, k, H, W, C]`` whose row i belongs to dataset
        index i, into a sharded store. ``N`` must equal ``dataset_size`` and ``C`` the dataset's ``channels``."""
        array_path = Path(array_path)
        try:
            array = np.load(array_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ClspError(f"{array_path}: not a readable .npy array ({e})") from None
        if array.ndim != 5 or array.dtype != np.uint8 or array.shape[-1] not in (1, 3):
            raise ClspError(f"{array_path}: expected uint8 [N, k, H, W, C], got {array.dtype} {array.shape}")
        if array.shape[0] != dataset_size:
            raise ClspError(
                f"{array_path}: holds positives for {array.shape[0]} images but the dataset has {dataset_size}; "
                "import it with the config of the dataset it was made for"
            )
        if array.shape[-1] != channels:
            raise ClspError(
                f"{array_path}: positives have {array.shape[-1]} channels but the dataset's images have {channels}; "
                "import positives made for this dataset (or convert them to its channels first)"
            )
        return cls.from_array(
            array,
            root,
            dataset_fingerprint=dataset_fingerprint,
            provenance={**provenance, "imported_from": array_path.name},
            shard_size=shard_size,
        )

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        root: str | Path,
        *,
        dataset_fingerprint: str,
        provenance: dict[str, Any],
        shard_size: int,
    ) -> "PositiveStore":
        """Write uint8 ``[N, k, H, W, C]`` positives (row i: dataset index i; memory-mapped is fine) as a complete
        store in ``root``, shard by shard; a rerun finishes what an interrupted one left."""
        store = cls.create(
            root,
            n=array.shape[0],
            num_candidates=array.shape[1],
            image_shape=array.shape[2:],
            dataset_fingerprint=dataset_fingerprint,
            provenance=provenance,
            shard_size=shard_size,
        )
        for index in store.missing_shards():
            rows = store.shard_rows(index)
            store.write_shard(index, np.ascontiguousarray(array[rows.start : rows.stop]))
        return store
