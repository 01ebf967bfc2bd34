"""The emoji data set builder (explainer.model.emoji) on a tiny fake package, and the committed data/emoji32.npz."""
from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from explainer.model import emoji


def _png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def _solid(rgb, size=64) -> bytes:
    return _png(np.concatenate([np.full((size, size, 3), rgb), np.full((size, size, 1), 255)], axis=-1))


def _half_red() -> bytes:
    """Red at alpha 128 everywhere: over white, (255, 127, 127)."""
    return _png(np.tile(np.array([255, 0, 0, 128]), (64, 64, 1)))


def _edged() -> bytes:
    """Left 16 columns fully transparent but green underneath, the rest opaque blue."""
    a = np.tile(np.array([0, 0, 255, 255]), (64, 64, 1))
    a[:, :16] = (0, 255, 0, 0)
    return _png(a)


def _palette() -> bytes:
    """A palette PNG whose index 0 (the border, black underneath) is transparent."""
    p = np.zeros((64, 64), dtype=np.uint8)
    p[16:48, 16:48] = 1
    im = Image.fromarray(p, "P")
    im.putpalette([0, 0, 0, 200, 100, 0] + [0] * 762)
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def _entries():
    """emoji.json entries and each image's bytes per vendor (twitter lacks "dog")."""
    entries, images = [], {}
    order = iter(range(1000))

    def add(code, short, category, png, variations=(), vendors=("google", "twitter")):
        image = f"{code.lower()}.png"
        e = {"unified": code, "short_name": short, "image": image, "category": category, "sort_order": next(order)}
        for v in ("google", "twitter"):
            e[f"has_img_{v}"] = v in vendors
        images[image] = png
        if variations:
            e["skin_variations"] = {}
            for tone, vpng in variations:
                vimage = f"{code.lower()}-{tone.lower()}.png"
                e["skin_variations"][tone] = {"unified": f"{code}-{tone}", "image": vimage,
                                              "has_img_google": True, "has_img_twitter": True}
                images[vimage] = vpng
        entries.append(e)

    add("1F600", "half_red", "Smileys & Emotion", _half_red())
    add("1F601", "edged", "Smileys & Emotion", _edged())
    for i in range(8):
        add(f"1F61{i}", f"smiley_{i}", "Smileys & Emotion", _solid((250, 200, 20 * i)))
    add("1F44B", "wave", "People & Body", _solid((240, 190, 120)),
        [("1F3FB", _solid((250, 220, 190))), ("1F3FC", _solid((220, 180, 140)))])
    for i in range(4):
        add(f"1F46{i}", f"person_{i}", "People & Body", _solid((10 * i, 100, 200)))
    add("1F3FB", "skin-tone-2", "Component", _solid((250, 220, 190)))
    add("1F436", "dog", "Animals & Nature", _solid((150, 100, 50)), vendors=("google",))
    add("1F523", "palette", "Symbols", _palette())
    add("1F1E6-1F1E8", "flag-ac", "Flags", _solid((0, 0, 120)))
    add("1F1E6-1F1E9", "flag-ad", "Flags", _solid((0, 0, 120)))  # the same picture as flag-ac
    add("1F1E6-1F1EA", "flag-ae", "Flags", _solid((0, 120, 0)))
    return entries, images


def _tarball(folder, vendor, entries, images):
    path = folder / f"emoji-datasource-{vendor}-0.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        def put(name, data):
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        put("emoji.json", json.dumps(entries).encode())
        put(f"img/{vendor}/sheets/32.png", _solid((0, 0, 0), 8))  # a sprite sheet: ignored
        for e in entries:
            files = [(e["image"], e)] + [(v["image"], v) for v in (e.get("skin_variations") or {}).values()]
            for image, meta in files:
                if meta[f"has_img_{vendor}"]:
                    put(f"img/{vendor}/64/{image}", images[image])
    return path


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("emoji_pkg")
    entries, images = _entries()
    return [_tarball(folder, v, entries, images) for v in ("google", "twitter")]


@pytest.fixture(scope="module")
def built(tarballs, tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji_out") / "emoji32.npz"
    emoji.build(*tarballs, out=out)
    with np.load(out, allow_pickle=False) as z:
        return out, {k: z[k] for k in z.files}


def _row(arrays, name, vendor="google"):
    hits = np.flatnonzero((arrays["names"] == name) & (arrays["vendors"] == vendor))
    assert len(hits) == 1, (name, vendor)
    return int(hits[0])


def test_keys_shapes_and_dtypes(built):
    _, a = built
    assert sorted(a) == sorted(emoji.KEYS)
    n = len(a["images"])
    assert n == 22 + 21  # google: 10 smileys, 5 people + 2 skin tones, dog, palette, 3 flags; twitter: no dog
    assert a["images"].shape == (n, 32, 32, 3) and a["images"].dtype == np.uint8
    assert a["labels"].shape == (n,) and a["labels"].dtype == np.int64
    assert a["held_out"].shape == (n,) and a["held_out"].dtype == np.bool_
    assert a["class_names"].tolist() == list(emoji.CLASS_NAMES) and len(a["class_names"]) == 9
    for key in ("class_names", "names", "vendors"):
        assert a[key].dtype.kind == "U"
    assert set(a["vendors"].tolist()) == {"google", "twitter"}


def test_composited_onto_white(built):
    _, a = built
    img = a["images"].astype(int)
    for vendor in ("google", "twitter"):
        half = img[_row(a, "half_red", vendor)]  # 255*0.502 + 255*0.498 = 255; 0 + 255*(127/255) = 127
        assert np.abs(half - np.array([255, 127, 127])).max() <= 1
        edged = img[_row(a, "edged", vendor)]
        assert (edged[:, :5] == 255).all()  # fully transparent (green underneath) -> white
        assert np.abs(edged[:, 12:] - np.array([0, 0, 255])).max() <= 1  # opaque blue stays blue
        assert (edged[..., 0] == edged[..., 1]).all() and (edged[..., 2] == 255).all()  # no green bleeds in
    pal = img[_row(a, "palette")]
    assert (pal[:5, :5] == 255).all() and (pal[:5, -5:] == 255).all()  # transparent palette index -> white
    assert np.abs(pal[16, 16] - np.array([200, 100, 0])).max() <= 1


def test_labels_component_and_missing_images(built):
    _, a = built
    names = a["names"].tolist()
    label = {n: emoji.CLASS_NAMES[c] for n, c in zip(names, a["labels"].tolist())}
    assert label["half_red"] == "Smileys & Emotion" and label["wave::skin-tone-3"] == "People & Body"
    assert label["dog"] == "Animals & Nature" and label["palette"] == "Symbols" and label["flag-ae"] == "Flags"
    assert "skin-tone-2" not in names  # the Component swatch is left out
    assert names.count("dog") == 1 and a["vendors"][names.index("dog")] == "google"  # twitter lacks it
    assert {"wave", "wave::skin-tone-2", "wave::skin-tone-3"} <= set(names)
    assert (np.diff(a["labels"]) >= 0).all()  # sorted by category


def _splits_by_emoji(a):
    split = defaultdict(set)
    for name, held in zip(a["names"].tolist(), a["held_out"].tolist()):
        split[name.split("::")[0]].add(held)
    return split


def test_held_out_by_emoji_across_vendors_and_skin_tones(built, tarballs):
    _, a = built
    split = _splits_by_emoji(a)
    assert all(len(s) == 1 for s in split.values())
    assert sum(held for (held,) in split.values()) == 1  # 10 % of 10 smileys; the smaller groups round to 0
    assert a["held_out"][a["labels"] == 0].sum() == 2  # that smiley, drawn by both vendors
    wide = emoji.build(*tarballs, out=None, held_out_fraction=0.5)
    split = _splits_by_emoji(wide)
    assert all(len(s) == 1 for s in split.values())
    assert split["wave"] == {True}  # a group of one rounds up at 0.5: with both vendors and every skin tone
    assert wide["held_out"][wide["names"] == "wave::skin-tone-2"].all()
    assert split["flag-ac"] == split["flag-ad"]  # identical pictures share a split
    assert 0 < wide["held_out"].sum() < len(wide["held_out"])


def test_no_picture_in_both_splits(tarballs):
    for fraction in (0.1, 0.3, 0.5, 0.7):
        a = emoji.build(*tarballs, out=None, held_out_fraction=fraction)
        train = {im.tobytes() for im in a["images"][~a["held_out"]]}
        test = {im.tobytes() for im in a["images"][a["held_out"]]}
        assert not train & test


def test_rebuild_is_byte_identical(built, tarballs, tmp_path):
    out, _ = built
    again = tmp_path / "again.npz"
    emoji.build(*reversed(tarballs), out=again)  # tarball order does not matter either
    assert again.read_bytes() == out.read_bytes()
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == [f"{k}.npy" for k in emoji.KEYS]
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_DEFLATED for i in infos)


def test_without_skin_tones_keeps_the_split(built, tarballs):
    _, a = built
    b = emoji.build(*tarballs, out=None, skin_tones=False)
    assert not any("::" in n for n in b["names"].tolist())
    base = np.char.find(a["names"], "::") < 0
    assert b["names"].tolist() == a["names"][base].tolist()
    assert (b["held_out"] == a["held_out"][base]).all() and (b["images"] == a["images"][base]).all()


def test_command_line_and_loader(tarballs, tmp_path, capsys):
    out = tmp_path / "cli.npz"
    args = ["--out", str(out)] + [x for t in tarballs for x in ("--tarball", str(t))]
    assert emoji.main(args) == 0
    text = capsys.readouterr().out
    assert "Smileys & Emotion" in text and "43 images" in text and "sha256" in text
    train, test = emoji.load("train", out), emoji.load("test", out)
    assert len(train) + len(test) == 43 and len(test) == 2
    x, _ = train.tensors()
    assert x.shape == (41, 3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert train.class_names == list(emoji.CLASS_NAMES) and "CC-BY 4.0" in train.attribution
    assert len(test.names) == len(test.vendors) == 2 and set(test.vendors.tolist()) == {"google", "twitter"}


def test_committed_data_set():
    if not emoji.EMOJI_NPZ.exists():
        pytest.skip("data/emoji32.npz not built")
    assert emoji.EMOJI_NPZ.stat().st_size < 15e6
    with np.load(emoji.EMOJI_NPZ, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(emoji.KEYS)
        a = {k: z[k] for k in z.files}
    n = len(a["images"])
    assert n > 3000 and a["images"].shape == (n, 32, 32, 3) and a["images"].dtype == np.uint8
    assert a["labels"].dtype == np.int64 and a["held_out"].dtype == np.bool_
    assert a["class_names"].tolist() == list(emoji.CLASS_NAMES)
    assert set(a["vendors"].tolist()) == {"google", "twitter"} and len(a["names"]) == n
    for c in range(9):
        m = a["labels"] == c
        assert m.sum() > 100 and 0.07 <= a["held_out"][m].mean() <= 0.13, emoji.CLASS_NAMES[c]
    assert all(len(s) == 1 for s in _splits_by_emoji(a).values())
    corners = a["images"][:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.mean() > 200  # mostly white background
