import numpy as np
from PIL import Image

from clsp.data.pixels import resize_images


def test_resize_matches_pil_and_centre_crops() -> None:
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (1, 6, 6, 3)), np.ones((1, 8, 8, 1))).astype(np.uint8)  # 48x48 blocks
    ours = resize_images(smooth, 24)
    pil = np.asarray(Image.fromarray(smooth[0]).resize((24, 24), Image.Resampling.BILINEAR))
    assert np.abs(ours[0].astype(int) - pil.astype(int)).mean() < 2.0
    wide = np.zeros((1, 20, 40, 1), dtype=np.uint8)
    wide[:, :, 10:30] = 255  # the middle half is white; a centre crop to a square keeps only it
    square = resize_images(wide, 10)
    assert square[:, :, 1:-1].min() == 255 and square.min() > 128  # only the antialiasing filter sees the black
    assert resize_images(smooth, 48) is smooth


def test_pixel_statistics_in_chunks_match_numpy_in_float64(monkeypatch) -> None:
    from clsp.data import pixels

    images = np.random.default_rng(7).integers(0, 256, (37, 5, 6, 3), dtype=np.uint8)
    flat = images.reshape(-1, 3).astype(np.float64) / 255
    mean, std = pixels.pixel_statistics(images)  # one chunk: numpy's own reductions, bit for bit
    assert mean.tolist() == flat.mean(0).tolist() and std.tolist() == flat.std(0).tolist()
    monkeypatch.setattr(pixels, "STATS_CHUNK_PIXELS", 64)  # 2 images per chunk
    mean, std = pixels.pixel_statistics(images)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-13)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-13)
