"""A contact sheet of pseudo-anomalies (image with the mask outlined in red, and the kind), to look at.

    python scripts/pseudo_sheet.py ROOT [--out /tmp/pseudo_sheet.png] [--count 40] [--seed 0] [--zoom 1] [--kinds K ...]

ROOT is an MVTec-format folder (`ROOT/<class>/train/good/*.png`). Each tile is a normal image at
224 x 224 with a pseudo-anomaly of the default mixture (or of the kinds given, in turn), the source
drawn from another class; the caption names the kind, the mask area and its width (twice the largest
distance to the mask's edge). `--zoom 2` shows tiles at twice their size, for thin anomalies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from siad.data.pseudo import generate, pseudo_anomaly
from siad.image import load_rgb, resize_for_encoder

_TILE = 224
_CAPTION = 18


def mask_width(mask: np.ndarray) -> float:
    """Twice the largest distance from a mask pixel to the nearest unmasked pixel (about the width)."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)
    return 2.0 * float(distance.max())


def tile(image: np.ndarray, mask: np.ndarray, caption: str, zoom: int) -> np.ndarray:
    big = cv2.resize(image, (_TILE * zoom, _TILE * zoom), interpolation=cv2.INTER_NEAREST)
    outline = cv2.resize(mask.astype(np.uint8), big.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    framed = big.copy()
    cv2.drawContours(framed, contours, -1, (255, 0, 0), 1)
    # left: the pseudo-anomaly as the model sees it; right: with the mask outline
    pair = np.concatenate([big, np.full((big.shape[0], 4, 3), 255, np.uint8), framed], axis=1)
    band = np.full((_CAPTION, pair.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, pair], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/pseudo_sheet.png"))
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--zoom", type=int, default=1)
    parser.add_argument("--kinds", nargs="*", default=None, help="kinds to show in turn (default: the mixture)")
    args = parser.parse_args()
    paths = sorted(args.root.glob("*/train/good/*.png"))
    if not paths:
        raise SystemExit(f"no images under {args.root}/*/train/good")
    rng = np.random.default_rng(args.seed)
    tiles = []
    for k in range(args.count):
        image_path, source_path = (paths[int(i)] for i in rng.choice(len(paths), size=2, replace=False))
        image = resize_for_encoder(load_rgb(image_path).rgb, _TILE, "squash")
        source = resize_for_encoder(load_rgb(source_path).rgb, _TILE, "squash")
        if args.kinds:
            result = generate(args.kinds[k % len(args.kinds)], image, source, rng)
        else:
            result = pseudo_anomaly(image, source, rng)
        caption = (f"{image_path.parts[-4]}: {result.kind}, {int(result.mask.sum())} px, "
                   f"w {mask_width(result.mask):.0f}")
        tiles.append(tile(result.image, result.mask, caption, args.zoom))
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (-len(tiles) % args.columns)
    rows = [np.concatenate(tiles[r:r + args.columns], axis=1) for r in range(0, len(tiles), args.columns)]
    sheet = np.concatenate(rows, axis=0)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({len(tiles)} tiles)")


if __name__ == "__main__":
    main()
