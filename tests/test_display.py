"""explainer.render.display: the one set of picture helpers (views, figures and the CLI use it), checked by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer.render import display as D


def test_to_uint8_values_and_layouts():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0]).reshape(1, 1, 1, 7)
    assert D.to_uint8(x).tolist() == [[[0, 0, 64, 128, 191, 255, 255]]]  # round((x + 1) * 127.5), clipped
    assert D.to_uint8(x).shape == (1, 1, 7) and D.to_uint8(x[0]).shape == (1, 7)  # one channel: [..., H, W]
    assert D.to_uint8(x, keep_gray_channel=True).shape == (1, 1, 7, 1)
    rgb = torch.stack([torch.full((2, 3), -1.0), torch.zeros(2, 3), torch.ones(2, 3)])  # [3, 2, 3]
    out = D.to_uint8(rgb)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8 and out[0, 0].tolist() == [0, 128, 255]
    assert D.to_uint8(rgb[None]).shape == (1, 2, 3, 3)
    assert D.eps_to_uint8(torch.tensor([[[3.0, -3.0, 0.0]]])).tolist() == [[255, 0, 128]]


def test_upscale_is_nearest_neighbour():
    img = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert D.upscale(img, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert D.upscale(img, 1) is img
    assert D.upscale(np.zeros((2, 3, 3), np.uint8), 3).shape == (6, 9, 3)


def test_hstack_vstack_pad_and_align():
    a = np.full((2, 3), 10, np.uint8)
    b = np.full((4, 1, 3), 20, np.uint8)
    h = D.hstack([a, b], pad=2, value=255)
    assert h.shape == (4, 3 + 2 + 1, 3)
    assert (h[:2, :3] == 10).all() and (h[2:, :3] == 255).all()  # top-aligned, padded below
    assert (h[:, 3:5] == 255).all() and (h[:, 5] == 20).all()
    v = D.vstack([a, b], pad=1, value=0)
    assert v.shape == (2 + 1 + 4, 3, 3) and (v[:2] == 10).all() and (v[2] == 0).all() and (v[3:, 1:] == 0).all()
    gray = D.hstack([a, a], pad=1, value=7, rgb=False)
    assert gray.shape == (2, 7) and gray[0].tolist() == [10, 10, 10, 7, 10, 10, 10]


@pytest.mark.parametrize("b,nrow", [(5, 2), (3, 3), (2, 5), (1, 1)])
def test_grid_tiles_row_by_row(b, nrow):
    imgs = np.stack([np.full((3, 4, 1), i + 1, np.uint8) for i in range(b)])
    g = D.grid(imgs, nrow=nrow, pad=1, pad_value=0)
    ncol, rows = min(nrow, b), -(-b // min(nrow, b))
    assert g.shape == (rows * 4 - 1, ncol * 5 - 1, 1)
    for i in range(b):
        r, c = divmod(i, ncol)
        assert (g[r * 4:r * 4 + 3, c * 5:c * 5 + 4] == i + 1).all()
    assert (g == 0).sum() == g.size - b * 12  # everything else is padding


def test_strip_captions_each_frame():
    frames = [np.zeros((8, 8), np.uint8), np.full((8, 8), 255, np.uint8)]
    s = D.strip(frames, ["t=1", "t=2"], pad=4)
    assert s.shape == (8 + 14, 8 + 4 + 8, 3)
    assert (s[:8, :8] == 0).all() and (s[:8, 12:] == 255).all()
    assert (s[8:, :8] < 128).any()  # caption text drawn in the band


def test_titled_writes_over_the_top_left_corner_and_keeps_the_size():
    img = np.full((40, 120, 3), 90, np.uint8)
    out = D.titled(img, "t = 5")
    assert out.shape == img.shape and out.dtype == np.uint8
    box = out[:14, :10]
    assert (box == 255).any() and (box < 90).any()  # a white box with dark text in it
    assert (out[14:] == 90).all() and (out[:, 60:] == 90).all()  # the rest untouched
    assert D.titled(np.full((20, 60), 90, np.uint8), "x").shape == (20, 60, 3)  # gray becomes RGB


def test_gif_keeps_gray_levels_and_gives_colour_frames_one_palette(tmp_path):
    from PIL import Image
    gray = [np.full((4, 6, 1), v, np.uint8) for v in (0, 77, 255)]
    with Image.open(D.save_gif(gray, tmp_path / "g.gif", ms_per_frame=50)) as gif:
        assert gif.n_frames == 3
        levels = []
        for k in range(3):
            gif.seek(k)
            levels.append(int(np.asarray(gif.convert("L"))[0, 0]))
            assert gif.info["duration"] == (50 if k < 2 else 1500)
    assert levels == [0, 77, 255]
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (5, 3), dtype=np.uint8)  # five colours: a palette holds them exactly
    frames = [colours[rng.integers(0, 5, (8, 8))] for _ in range(7)]
    with Image.open(D.save_gif(frames, tmp_path / "c.gif", ms_per_frame=80)) as gif:
        assert gif.n_frames == 7
        palettes = set()
        for k, f in enumerate(frames):  # no dithering: every pixel keeps its colour exactly
            gif.seek(k)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), f)
            palettes.add(bytes(gif.palette.palette))
    assert len(palettes) == 1  # one palette for all frames
