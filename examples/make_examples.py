"""Write the app's example images: SIAD-Synth test classes (unseen in training), normal and anomalous, and
a pair cut from a real photograph (scikit-image's brick wall, as the real-photo held-out set makes them).

Run: python examples/make_examples.py  (writes examples/images/*.png and their masks next to this file)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from siad.data.synth import make_anomalous, make_normal
from siad.data.synth.defects import apply_defect
from siad.data.synth.realphoto import load_photo, photo_crop

EXAMPLES = [("gear", None), ("gear", "missing"), ("capsule", None), ("capsule", "stain"),
            ("connector", "crack"), ("wood", "scratch"), ("gravel", "hole"), ("bracket", "contamination")]
PHOTO_EXAMPLES = [("brick_wall", None), ("brick_wall", "crack")]  # test halves of the photograph


def main() -> None:
    out = Path(__file__).resolve().parent / "images"
    out.mkdir(exist_ok=True)
    for index, (name, defect) in enumerate(EXAMPLES):
        rng = np.random.default_rng(1000 + index)
        if defect is None:
            image = make_normal(name, rng, 256).image
            Image.fromarray(image).save(out / f"{name}_good.png", optimize=True)
        else:
            image, mask = make_anomalous(name, defect, rng, 256)
            Image.fromarray(image).save(out / f"{name}_{defect}.png", optimize=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{name}_{defect}_mask.png", optimize=True)
    for index, (name, defect) in enumerate(PHOTO_EXAMPLES):
        rng = np.random.default_rng(2000 + index)
        image = photo_crop(load_photo(name), "test", 256, rng)
        if defect is None:
            Image.fromarray(image).save(out / f"{name}_good.png", optimize=True)
        else:
            image, mask = apply_defect(defect, image, rng)
            Image.fromarray(image).save(out / f"{name}_{defect}.png", optimize=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / f"{name}_{defect}_mask.png", optimize=True)
    print(f"wrote {len(EXAMPLES) + len(PHOTO_EXAMPLES)} examples to {out}")


if __name__ == "__main__":
    main()
