"""Colour emoji at 32x32: builds ``data/emoji32.npz`` from the emoji-datasource npm packages.

Sources: ``emoji-datasource-google`` and ``emoji-datasource-twitter`` 16.0.0 (64 px PNGs and ``emoji.json``).
Google's images are Noto Emoji (Apache-2.0); Twitter's are Twemoji graphics by Twitter, Inc and other
contributors (CC-BY 4.0). Every image is composited onto white (alpha-correct), resized to 32x32 (LANCZOS)
and labelled with its emoji.json category (9 classes; "Component", the bare skin-tone swatches, is left out).
About 10 % of the emoji of each category are held out, with both vendors' drawings and all skin tones.

Rebuild (fetches the two tarballs with npm into a temporary folder)::

    python -m explainer.model.emoji
    python -m explainer.model.emoji --tarball google.tgz --tarball twitter.tgz --out data/emoji32.npz
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..paths import DATA, repo_relative

EMOJI_NPZ = DATA / "emoji32.npz"
VERSION = "16.0.0"
PACKAGES = {"google": "emoji-datasource-google", "twitter": "emoji-datasource-twitter"}
CLASS_NAMES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
               "Activities", "Objects", "Symbols", "Flags")
LEFT_OUT = ("Component",)
SKIN_TONES = {"1F3FB": "skin-tone-2", "1F3FC": "skin-tone-3", "1F3FD": "skin-tone-4",
              "1F3FE": "skin-tone-5", "1F3FF": "skin-tone-6"}  # emoji.json's own short names for the modifiers
SIZE = 32
HELD_OUT_FRACTION = 0.1
ATTRIBUTION = ("Emoji: Noto Emoji (Google, Apache-2.0) and Twemoji graphics by Twitter, Inc and other contributors "
               "(CC-BY 4.0), from emoji-datasource-google/-twitter 16.0.0; composited onto white, resized to 32x32")
KEYS = ("images", "labels", "class_names", "names", "vendors", "held_out", "attribution")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: a rebuild gives the same bytes

_PNG = re.compile(r"^[^/]+/img/([a-z]+)/64/([0-9a-f-]+\.png)$")
_JSON = re.compile(r"^[^/]+/emoji\.json$")


def fetch(folder, version: str = VERSION, npm: str = "npm") -> list[Path]:
    """Download both packages' tarballs into ``folder`` with ``npm pack``; returns their paths."""
    folder = Path(folder)
    paths = []
    for package in PACKAGES.values():
        done = subprocess.run([npm, "pack", f"{package}@{version}", "--silent"], cwd=folder, check=True,
                              capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        path = folder / lines[-1].strip() if lines else folder / f"{package}-{version}.tgz"
        if not path.is_file():
            raise FileNotFoundError(f"npm pack did not leave {path.name}")
        paths.append(path)
    return paths


def read_tarball(path) -> tuple[list[dict], dict[str, dict[str, bytes]]]:
    """The ``emoji.json`` entries and the 64 px PNG bytes per vendor (``{vendor: {image name: bytes}}``)."""
    entries, pngs = None, {}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            m = _PNG.match(member.name)
            if m and m.group(1) in PACKAGES:  # only the two openly licensed image sets
                pngs.setdefault(m.group(1), {})[m.group(2)] = tar.extractfile(member).read()
            elif _JSON.match(member.name):
                entries = json.loads(tar.extractfile(member).read().decode("utf-8"))
    if entries is None:
        raise ValueError(f"{Path(path).name}: no emoji.json in the package")
    if not pngs:
        raise ValueError(f"{Path(path).name}: no img/google/64 or img/twitter/64 images")
    return entries, pngs


def to_rgb(png: bytes, size: int = SIZE) -> np.ndarray:
    """One PNG composited onto white (in float, so fully transparent pixels are white whatever their RGB)
    and resized to ``size`` x ``size`` with LANCZOS: uint8 [size, size, 3].

    Compositing first and resizing after equals resizing the premultiplied image and compositing it.
    """
    with Image.open(io.BytesIO(png)) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    white = rgba[..., :3] * alpha + (1.0 - alpha)
    chans = []
    for c in range(3):  # mode "F" (float32) keeps the resize free of 8-bit rounding
        plane = Image.fromarray(np.ascontiguousarray(white[..., c] * 255.0, dtype=np.float32))
        chans.append(np.asarray(plane.resize((size, size), Image.Resampling.LANCZOS)))
    return np.clip(np.rint(np.stack(chans, axis=-1)), 0, 255).astype(np.uint8)


def _group_key(entry: dict) -> tuple[str, int]:
    return entry["category"], len(entry.get("skin_variations") or {})


def held_out_emoji(entries, fraction: float = HELD_OUT_FRACTION) -> set[str]:
    """The ``unified`` code points of the held-out base emoji.

    Within each group (category, number of skin-tone variants) the emoji are ranked by a SHA-256 of their
    code points and the first ``round(fraction * n)`` are held out: about ``fraction`` of each category's
    emoji and of its images, the same on every machine.
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for e in entries:
        groups.setdefault(_group_key(e), []).append(e["unified"])
    held = set()
    for codes in groups.values():
        ranked = sorted(set(codes), key=lambda u: (hashlib.sha256(f"emoji32:{u}".encode()).hexdigest(), u))
        held.update(ranked[:int(fraction * len(ranked) + 0.5)])
    return held


def _items(entry: dict):
    """(variant key, name, image file, entry or variation) for a base emoji and its skin-tone variants."""
    yield "", entry["short_name"], entry["image"], entry
    for key, var in sorted((entry.get("skin_variations") or {}).items()):
        tones = "".join("::" + SKIN_TONES.get(k.upper(), k.lower()) for k in key.split("-"))
        yield key, entry["short_name"] + tones, var["image"], var


def build(*tarballs, out=EMOJI_NPZ, skin_tones: bool = True, size: int = SIZE,
          held_out_fraction: float = HELD_OUT_FRACTION) -> dict[str, np.ndarray]:
    """Build the data set from the packages' tarballs, write it to ``out`` (unless None) and return its arrays.

    Order: category, emoji.json ``sort_order``, base emoji, skin tone, vendor; the output does not depend on
    the order of ``tarballs``. Images a vendor lacks (``has_img_<vendor>`` false) are skipped. Emoji that share
    an identical 32x32 image (some flags, Twemoji's families) share their split, so no picture is in both.
    """
    merged: dict[str, dict] = {}
    images_by_vendor: dict[str, dict[str, bytes]] = {}
    for path in tarballs:
        entries, pngs = read_tarball(path)
        for e in entries:
            merged.setdefault(e["unified"], e)
        for vendor, files in pngs.items():
            if vendor in images_by_vendor:
                raise ValueError(f"images for {vendor} given twice")
            images_by_vendor[vendor] = files
    if not images_by_vendor:
        raise ValueError("no tarballs given")
    unknown = sorted({e["category"] for e in merged.values()} - set(CLASS_NAMES) - set(LEFT_OUT))
    if unknown:
        raise ValueError(f"unknown emoji categories: {unknown}")
    bases = {e["unified"]: e for e in merged.values() if e["category"] in CLASS_NAMES}

    rows = []  # (sort key, base unified, name, vendor, image); every skin tone, so the split never depends on them
    for u, e in bases.items():
        for key, name, image, meta in _items(e):
            for vendor in sorted(images_by_vendor):
                if not meta.get(f"has_img_{vendor}", True):
                    continue
                png = images_by_vendor[vendor].get(image)
                if png is None:
                    if f"has_img_{vendor}" in meta:
                        raise ValueError(f"{vendor}: emoji.json lists {image} ({name}) but the package lacks it")
                    continue
                order = (CLASS_NAMES.index(e["category"]), e.get("sort_order", 0), u, key, vendor)
                rows.append((order, u, name, vendor, to_rgb(png, size)))
    if not rows:
        raise ValueError("no images found")
    rows.sort(key=lambda r: r[0])

    first = {}  # base emoji -> its first row: the order that picks each cluster's representative
    for i, r in enumerate(rows):
        first.setdefault(r[1], i)
    parent = {u: u for u in first}

    def find(u):
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    seen: dict[bytes, str] = {}
    for r in rows:  # emoji whose pictures coincide (any vendor, any skin tone) join one cluster
        a, b = find(seen.setdefault(r[4].tobytes(), r[1])), find(r[1])
        if a != b:
            parent[max(a, b, key=first.get)] = min(a, b, key=first.get)
    held = held_out_emoji([bases[u] for u in first if find(u) == u], held_out_fraction)

    if not skin_tones:
        rows = [r for r in rows if r[0][3] == ""]
    arrays = {
        "images": np.stack([r[4] for r in rows]),
        "labels": np.array([r[0][0] for r in rows], dtype=np.int64),
        "class_names": np.array(CLASS_NAMES),
        "names": np.array([r[2] for r in rows]),
        "vendors": np.array([r[3] for r in rows]),
        "held_out": np.array([find(r[1]) in held for r in rows], dtype=bool),
        "attribution": np.array(ATTRIBUTION),
    }
    if out is not None:
        write_npz(out, arrays)
    return arrays


def write_npz(path, arrays: dict[str, np.ndarray]) -> Path:
    """A compressed .npz (as ``np.savez_compressed``, readable by ``np.load`` without pickle) whose bytes
    depend only on the arrays: fixed member dates and order. Written atomically."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy.getvalue(), compresslevel=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return path


def load(split: str = "train", path=EMOJI_NPZ):
    """The built emoji as a ``Dataset``: split "train", "test" (held out) or "all"."""
    from .data import load_npz

    return load_npz(path, split)


def summary(arrays: dict[str, np.ndarray]) -> str:
    """Counts per category, vendor and split, as a text table."""
    labels, vendors, held = arrays["labels"], arrays["vendors"], arrays["held_out"]
    vs = sorted(set(vendors.tolist()))
    head = f"{'category':<20}" + "".join(f"{v:>9}" for v in vs) + f"{'train':>8}{'held out':>10}{'total':>8}"
    lines = [head]
    for c, name in enumerate(arrays["class_names"].tolist()):
        m = labels == c
        lines.append(f"{name:<20}" + "".join(f"{int((m & (vendors == v)).sum()):>9}" for v in vs)
                     + f"{int((m & ~held).sum()):>8}{int((m & held).sum()):>10}{int(m.sum()):>8}")
    lines.append(f"{'all':<20}" + "".join(f"{int((vendors == v).sum()):>9}" for v in vs)
                 + f"{int((~held).sum()):>8}{int(held.sum()):>10}{len(labels):>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: ``python -m explainer.model.emoji [--tarball T ...] [--out PATH] [--no-skin-tones]``."""
    p = argparse.ArgumentParser(prog="python -m explainer.model.emoji", description=__doc__.split("\n")[0])
    p.add_argument("--tarball", action="append", default=[], metavar="TGZ",
                   help="a downloaded package tarball (repeat for both); default: fetch them with npm")
    p.add_argument("--out", default=str(EMOJI_NPZ), help="output .npz (default: data/emoji32.npz)")
    p.add_argument("--version", default=VERSION, help=f"package version to fetch (default {VERSION})")
    p.add_argument("--npm", default="npm", help="the npm executable")
    p.add_argument("--no-skin-tones", action="store_true", help="base emoji only, no skin-tone variants")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tarballs = [Path(t) for t in args.tarball] or fetch(tmp, args.version, args.npm)
        for t in tarballs:
            print(f"{t.name}  sha256 {hashlib.sha256(t.read_bytes()).hexdigest()}")
        arrays = build(*tarballs, out=args.out, skin_tones=not args.no_skin_tones)
    print(summary(arrays))
    size = Path(args.out).stat().st_size
    print(f"wrote {repo_relative(args.out)}: {len(arrays['images'])} images, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
