"""The MVTec AD folder layout, shared by MVTec AD, MPDD, DTD-Synthetic, BTAD, pre-tiled SDD and any
MVTec-format folder: `<class>/train/<normal>`, `<class>/test/<defect>` and masks in
`<class>/ground_truth/<defect>`, paired with their images by file stem (`000.png` <-> `000_mask.png`
or `000.bmp`), never by sort order. An anomalous test image without a mask is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from siad.data.sample import NORMAL_DEFECT, Sample, list_images, masks_by_stem, require_dir
from siad.data.spec import ReadOptions


def read_class(class_dir: Path, class_name: str, split: str, normal_folder: str = NORMAL_DEFECT) -> list[Sample]:
    """One class folder in MVTec layout: `train/<normal>`, `test/<defect>`, `ground_truth/<defect>`."""
    if split == "train":
        folder = require_dir(class_dir / "train" / normal_folder, f"normal training images of '{class_name}'")
        return [Sample(p, None, class_name, NORMAL_DEFECT, 0) for p in list_images(folder)]
    test_dir = require_dir(class_dir / "test", f"test images of '{class_name}'")
    samples: list[Sample] = []
    for defect_dir in sorted((d for d in test_dir.iterdir() if d.is_dir()), key=lambda d: d.name):
        images = list_images(defect_dir)
        if defect_dir.name == normal_folder:
            samples.extend(Sample(p, None, class_name, NORMAL_DEFECT, 0) for p in images)
            continue
        if not images:
            continue
        mask_dir = class_dir / "ground_truth" / defect_dir.name
        require_dir(mask_dir, f"masks of the '{defect_dir.name}' test images of '{class_name}'")
        masks = masks_by_stem(mask_dir)
        for image in images:
            mask = masks.get(image.stem)
            if mask is None:
                raise FileNotFoundError(
                    f"no mask for the anomalous test image {image}: expected "
                    f"{mask_dir / (image.stem + '_mask.png')} (or {image.stem}.<ext>) in {mask_dir}")
            samples.append(Sample(image, mask, class_name, defect_dir.name, 1))
    return samples


@dataclass(frozen=True)
class MvtecLayout:
    """The `Reader` of an MVTec-layout root (`siad.data.spec.Reader`).

    normal_folder: the folder of normal images ("good"; BTAD: "ok"); root_as_class: the root itself
    may be one class folder (it holds `train/good`, `test/good` or `ground_truth`), named
    `root_class_name` or, when that is None, after the root folder."""

    normal_folder: str = NORMAL_DEFECT
    root_as_class: bool = False
    root_class_name: str | None = None

    def __call__(self, root: Path, split: str, options: ReadOptions) -> list[Sample]:
        classes = self.class_dirs(root, options)
        if options.classes is not None:  # read only the classes asked for (the others may be incomplete)
            classes = [(d, c) for d, c in classes if c in options.classes]
        return [s for class_dir, name in classes for s in read_class(class_dir, name, split, self.normal_folder)]

    def class_dirs(self, root: Path, options: ReadOptions) -> list[tuple[Path, str]]:
        """The class folders (those holding `train/` or `test/`) of the root, with their class names; the
        root itself when `root_as_class` and it is one."""
        looks_like_class = any((root / sub).is_dir() for sub in ("train/good", "test/good", "ground_truth"))
        if self.root_as_class and looks_like_class:
            return [(root, self.root_class_name or root.name)]
        found = [(d, d.name) for d in sorted(root.iterdir(), key=lambda d: d.name)
                 if d.is_dir() and not d.name.startswith(".") and ((d / "test").is_dir() or (d / "train").is_dir())]
        if not found:
            example = root / options.example_class
            raise FileNotFoundError(
                f"no class folder in MVTec layout under {root} for dataset '{options.dataset}': expected e.g. "
                f"{example / 'train' / self.normal_folder} and {example / 'test'}")
        return found

    def class_folders(self, root: Path) -> list[str]:
        """The class folders of a root that hold `train/` (or the root's name when it holds `train/` itself
        and `root_as_class`), found without reading images: training names the classes without normal images."""
        if self.root_as_class and (root / "train").is_dir():
            return [root.name]
        return sorted(d.name for d in root.iterdir()
                      if d.is_dir() and not d.name.startswith(".") and (d / "train").is_dir())
