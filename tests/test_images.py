"""explainer.render.images: every kind of upload becomes a bounded 8-bit image or a clear ImageError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from explainer.render import images
from explainer.model.data import load_mnist
from explainer.render.images import ImageError, load_digit, load_image, to_digit, to_tensor

from explainer.paths import ASSETS  # noqa: E402


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims width x height (a decompression bomb's header), CRC fixed."""
    raw = bytearray(png_bytes(Image.new("L", (1, 1))))
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])) & 0xFFFFFFFF)
    return bytes(raw)


def test_big_photo_is_downscaled_keeping_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (10, 200, 30)).save(path, quality=95)
    img = load_image(path, max_side=256)
    assert img.dtype == np.uint8 and img.shape == (171, 256, 3)
    assert np.abs(img.astype(int) - [10, 200, 30]).max() <= 3


def test_small_image_is_not_enlarged(tmp_path):
    img = load_image(png_bytes(Image.new("RGB", (40, 30), (1, 2, 3))), max_side=256)
    assert img.shape == (30, 40, 3) and (img == [1, 2, 3]).all()


@pytest.mark.parametrize("mode,color,expected", [
    ("L", 77, (77, 77, 77)),
    ("1", 1, (255, 255, 255)),
    ("RGB", (200, 100, 50), (200, 100, 50)),
    ("CMYK", (255, 0, 0, 0), (0, 255, 255)),  # pure cyan ink
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ("LA", (90, 255), (90, 90, 90)),
])
def test_any_mode_becomes_rgb(mode, color, expected):
    img = load_image(png_bytes(Image.new(mode, (8, 6), color), format="TIFF" if mode == "CMYK" else "PNG"))
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    assert (img == expected).all()


def test_transparency_is_flattened_on_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    im.putpixel((0, 0), (255, 0, 0, 255))
    img = load_image(png_bytes(im))
    assert tuple(img[0, 0]) == (255, 0, 0)
    assert tuple(img[1, 1]) == (255, 255, 255)


def test_palette_with_transparency():
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    im.putpixel((0, 0), 1)
    img = load_image(png_bytes(im, transparency=0))
    assert tuple(img[0, 0]) == (0, 255, 0)  # opaque palette entry 1
    assert tuple(img[2, 2]) == (255, 255, 255)  # transparent entry 0 -> white


def test_16_bit_grayscale_is_scaled_by_its_full_range():
    a = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    img = load_image(png_bytes(im), mode="L")
    assert img.tolist() == [[0, 255], [128, 1]]


def test_32_bit_float_image_is_scaled_by_its_range(tmp_path):
    im = Image.fromarray(np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32), "F")
    path = tmp_path / "f.tif"
    im.save(path)
    img = load_image(path, mode="L")
    assert img.tolist() == [[0, 64], [128, 255]]


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    img = load_image(buf.getvalue())
    assert (img == (255, 0, 0)).all()


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise to display
    raw = png_bytes(Image.new("RGB", (40, 20), (120, 120, 120)), format="JPEG", exif=exif)
    assert load_image(raw).shape == (40, 20, 3)


@pytest.mark.parametrize("data,words", [
    (b"this is a text file, not a picture\n" * 20, "not an image"),
    (b"", "empty"),
])
def test_non_images_give_clear_errors(tmp_path, data, words):
    path = tmp_path / "upload.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=words):
        load_image(path)


def test_truncated_image_gives_clear_error():
    rng = np.random.default_rng(0)
    raw = png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(raw[: len(raw) // 2])


@pytest.mark.parametrize("side", [8000, 20000])  # above our limit; above PIL's own bomb limit
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(ImageError, match="pixels"):
        load_image(png_with_size(side, side))


def test_too_large_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 100)
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(Image.new("RGB", (64, 64))) + b"\0" * 200)
    with pytest.raises(ImageError, match="limit"):
        load_image(path)


def test_missing_file_and_none():
    with pytest.raises(ImageError, match="no such image"):
        load_image("/nonexistent/file.png")
    with pytest.raises(ImageError, match="no image given"):
        load_image(None)


def test_numpy_inputs():
    assert load_image(np.full((5, 6), 0.5)).tolist()[0][0] == [128, 128, 128]
    assert load_image(np.ones((3, 3), dtype=bool), mode="L").min() == 255
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2)))
    with pytest.raises(ImageError, match="NaN"):
        load_image(np.full((2, 2), np.nan))


def test_bad_arguments():
    with pytest.raises(ValueError):
        load_image(np.zeros((2, 2)), mode="CMYK")
    with pytest.raises(ValueError):
        load_image(np.zeros((2, 2)), max_side=0)


def test_to_tensor_range_and_layout():
    x = to_tensor(np.array([[0, 255]], dtype=np.uint8))
    assert x.shape == (1, 1, 1, 2) and x.dtype == torch.float32
    assert x.flatten().tolist() == [-1.0, 1.0]
    assert to_tensor(np.zeros((4, 5, 3), dtype=np.uint8)).shape == (1, 3, 4, 5)


def test_to_digit_makes_an_mnist_like_digit():
    paper = np.full((120, 90), 250, dtype=np.uint8)  # dark pen on white paper, off-centre
    paper[20:70, 10:25] = 5
    d = to_digit(paper)
    assert d.shape == (28, 28) and d.dtype == np.uint8
    assert d.max() == 255 and d[0].max() == 0 and d[:, 0].max() == 0  # bright ink, black border
    ys, xs = np.nonzero(d > 25)
    assert ys.max() - ys.min() + 1 <= 20 and xs.max() - xs.min() + 1 <= 20  # fits the 20x20 box
    w = d.astype(float)
    cy, cx = (np.arange(28)[:, None] * w).sum() / w.sum(), (np.arange(28)[None] * w).sum() / w.sum()
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1  # centred by mass


def test_to_digit_rejects_blank_pictures():
    with pytest.raises(ImageError, match="blank"):
        to_digit(np.full((50, 50), 255, dtype=np.uint8))


def test_load_digit_keeps_mnist_digits_unchanged():
    test = load_mnist("test")
    assert (load_digit(ASSETS / "digit_0.png") == test.images[0]).all()
    photo = load_digit(ASSETS / "camera.png")
    assert photo.shape == (28, 28)
