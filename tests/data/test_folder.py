"""The folder source on real PNG and JPEG files, including broken ones."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clsp.config import DataConfig
from clsp.data import load_images
from clsp.errors import ClspError


def save(path: Path, size: tuple[int, int], color: tuple[int, int, int] | int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_labelled(root: Path) -> None:
    save(root / "cat" / "a.png", (12, 12), (255, 0, 0))
    save(root / "cat" / "deeper" / "b.jpg", (12, 12), (250, 5, 5))
    save(root / "dog" / "c.png", (12, 12), (0, 0, 255))
    save(root / "dog" / "d.png", (12, 12), 128, mode="L")
    save(root / ".hidden" / "e.png", (12, 12), (0, 255, 0))


def test_labels_from_subfolders(tmp_path: Path) -> None:
    make_labelled(tmp_path)
    images = load_images(DataConfig(source="folder", root=tmp_path), "all")
    assert images.images.shape == (4, 12, 12, 3)
    assert images.class_names == ("cat", "dog")
    np.testing.assert_array_equal(images.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(images.images[0, 0, 0], [255, 0, 0])
    assert abs(int(images.images[1, 0, 0, 0]) - 250) <= 3  # JPEG is lossy
    np.testing.assert_array_equal(images.images[3, 5, 5], [128, 128, 128])  # grayscale becomes RGB


def test_unlabelled_and_resized(tmp_path: Path) -> None:
    save(tmp_path / "x.png", (40, 20), (10, 20, 30))
    save(tmp_path / "y.jpg", (16, 16), (200, 200, 200))
    images = load_images(DataConfig(source="folder", root=tmp_path, image_size=8), "all")
    assert images.labels is None
    assert images.images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images.images[0, 4, 4], [10, 20, 30])


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    make_labelled(tmp_path)
    broken = tmp_path / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(ClspError) as caught:
        load_images(DataConfig(source="folder", root=tmp_path), "all")
    assert str(broken) in str(caught.value) and "--skip-bad-images" in str(caught.value)


def test_skip_bad_images_warns_with_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_labelled(tmp_path)
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    truncated = tmp_path / "cat" / "truncated.jpg"
    save(truncated, (64, 64), (1, 2, 3))
    truncated.write_bytes(truncated.read_bytes()[:200])
    images = load_images(DataConfig(source="folder", root=tmp_path, skip_bad_images=True), "all")
    assert len(images) == 4
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().err


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(ClspError, match="is not a folder"):
        load_images(DataConfig(source="folder", root=tmp_path / "nowhere"), "all")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClspError, match="holds no files"):
        load_images(DataConfig(source="folder", root=tmp_path / "empty"), "all")
    mixed = tmp_path / "mixed"
    save(mixed / "top.png", (4, 4), (0, 0, 0))
    save(mixed / "cls" / "in.png", (4, 4), (0, 0, 0))
    with pytest.raises(ClspError, match="both at the top level"):
        load_images(DataConfig(source="folder", root=mixed), "all")
    sizes = tmp_path / "sizes"
    save(sizes / "a.png", (4, 4), (0, 0, 0))
    save(sizes / "b.png", (5, 4), (0, 0, 0))
    with pytest.raises(ClspError, match=r"b.png: size 5x4 differs .* set data.image_size"):
        load_images(DataConfig(source="folder", root=sizes), "all")


def luma(rgb: np.ndarray) -> np.ndarray:
    """The stated rule, written out: (299 R + 587 G + 114 B + 500) // 1000."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    return ((299 * r + 587 * g + 114 * b + 500) // 1000).astype(np.uint8)


def save_every_mode(root: Path, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One PNG per mode an image folder holds in practice (``size`` is W x H); returns each file's RGB pixels."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    rgb, grey, alpha = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    files = {
        "a_rgb.png": Image.fromarray(rgb),
        "b_grey.png": Image.fromarray(grey[..., 0]),
        "c_grey_alpha.png": Image.fromarray(np.dstack([grey[..., 0], alpha[..., 0]]), "LA"),
        "d_rgba.png": Image.fromarray(np.dstack([rgb, alpha[..., 0]]), "RGBA"),
        "e_palette.png": Image.fromarray(rgb).quantize(16),
    }
    files["e_palette.png"].info["transparency"] = 0  # palette entry 0 is transparent
    for name, picture in files.items():
        picture.save(root / name)
    return {name: np.array(Image.open(root / name).convert("RGB")) for name in files}


def test_every_image_mode_follows_the_one_channel_rule(tmp_path: Path) -> None:
    decoded = save_every_mode(tmp_path, (9, 7))
    grey = load_images(DataConfig(source="folder", root=tmp_path, channels=1), "all").images
    rgb = load_images(DataConfig(source="folder", root=tmp_path), "all").images
    assert grey.shape == (5, 7, 9, 1) and rgb.shape == (5, 7, 9, 3)
    for i, name in enumerate(sorted(decoded)):  # alpha ignored, palette expanded
        np.testing.assert_array_equal(rgb[i], decoded[name], err_msg=name)
        np.testing.assert_array_equal(grey[i, ..., 0], luma(decoded[name]), err_msg=name)
    for i in (1, 2):  # grey files keep their values and come back as R = G = B
        stored = np.array(Image.open(tmp_path / sorted(decoded)[i]).getchannel("L"))
        np.testing.assert_array_equal(grey[i, ..., 0], stored)
        np.testing.assert_array_equal(rgb[i], np.repeat(grey[i], 3, axis=2))


def test_mixed_sizes_are_made_grey_then_resized(tmp_path: Path) -> None:
    save_every_mode(tmp_path / "wide", (30, 12))
    save_every_mode(tmp_path / "tall", (10, 25))
    grey = load_images(DataConfig(source="folder", root=tmp_path, image_size=8, channels=1), "all")
    rgb = load_images(DataConfig(source="folder", root=tmp_path, image_size=8, channels=3), "all")
    assert grey.images.shape == (10, 8, 8, 1) and rgb.images.shape == (10, 8, 8, 3)
    np.testing.assert_array_equal(grey.labels, rgb.labels)
    for i in (1, 2, 6, 7):  # grey files: one channel of the RGB read, resized alike
        np.testing.assert_array_equal(grey.images[i], rgb.images[i, ..., :1])


def test_channels_apply_to_every_source() -> None:
    own = load_images(DataConfig(source="digits"), "test").images
    rgb = load_images(DataConfig(source="digits", channels=3), "test").images
    assert own.shape[3] == 1 and rgb.shape == (*own.shape[:3], 3)
    np.testing.assert_array_equal(rgb, np.repeat(own, 3, axis=3))
    np.testing.assert_array_equal(load_images(DataConfig(source="digits", channels=1), "test").images, own)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16)  # 0, 256, ..., 65280
    Image.fromarray(values).save(tmp_path / "deep.png")  # a 16-bit grey PNG
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")
    images = load_images(DataConfig(source="folder", root=tmp_path, channels=1), "all").images[0, ..., 0]
    expected = (values.astype(np.int64) * 255 + 32767) // 65535  # by hand: 65280 -> 254, 256 -> 1
    np.testing.assert_array_equal(images, expected)
    assert len(np.unique(images)) == 255 and images.max() == 254  # clipping made 255 of 256 pixels white


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A valid 1x1 grey PNG whose header then claims ``width`` x ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    raw[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(raw[ihdr - 4 : ihdr + 13]))
    raw[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(raw))


def test_a_decompression_bomb_is_refused_from_its_header_even_when_skipping_bad_images(tmp_path: Path, capsys) -> None:
    import time

    save(tmp_path / "ok.png", (12, 12), (1, 2, 3))
    _png_claiming(tmp_path / "bomb.png", 15000, 15000)
    started = time.perf_counter()
    for skip in (False, True):
        with pytest.raises(
            ClspError, match=r"bomb.png: 15000x15000 = 225000000 pixels, more than data.max_image_pixels"
        ) as e:
            load_images(DataConfig(source="folder", root=tmp_path, skip_bad_images=skip), "all")
        assert "\n" not in str(e.value)
    assert time.perf_counter() - started < 2 and "DecompressionBomb" not in capsys.readouterr().err
    (tmp_path / "bomb.png").unlink()
    save(tmp_path / "big.png", (20, 20), (1, 2, 3))
    with pytest.raises(ClspError, match=r"big.png: 20x20 = 400 pixels, more than data.max_image_pixels=300"):
        load_images(DataConfig(source="folder", root=tmp_path, max_image_pixels=300), "all")
