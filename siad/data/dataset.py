"""The training data of eq. 1: normal images, each paired with a pseudo-anomalous copy.

`PseudoAnomalyDataset(samples)` keeps the normal samples (paths only; images are decoded and
resized when an item is asked for, with `siad.image.load_rgb` and `siad.image.resize_for_encoder`,
the same path as inference). Item i is normal image i at the encoder resolution and its
pseudo-anomalous copy, made at that resolution so that the mask is exact: by default CutPaste +
Poisson (`cutpaste_poisson`); with `kinds`/`weights`, a kind drawn from a mixture of
`siad.data.pseudo` (for instance `kinds=siad.data.pseudo.KINDS` with the default weights).

The pseudo-anomaly of item i at epoch e depends only on (seed, e, i): its generator is
`numpy.random.default_rng([seed, e, i])`, which picks the source image (with probability
`foreign_prob` a normal image of another class, a foreign texture; otherwise another normal image of
the same class, or the image itself if the class has only one), then the kind (no draw for a single
kind), then makes the pseudo-anomaly. The class-name swap (`name_swap_prob`) draws from its own
generator `default_rng([seed, e, i, 1])`, so it never changes the images. Call `set_epoch(e)` before
each epoch; with a `DataLoader`, do it before iterating (workers copy the dataset when an iteration
starts, so `persistent_workers=True` would keep the old epoch).

The default options (one kind "cutpaste", no foreign source, thirds, no name swap) give exactly the
items of the first version of this dataset.

`collate_pairs(items)` makes the batch of eq. 1: the normal images first, then their
pseudo-anomalies (B = 2 x items).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from siad.answers import check_edges, region_positions
from siad.config import VisionConfig
from siad.data.pseudo import CUTPASTE, choose_kind, generate, mixture, uses_source
from siad.data.sample import Sample
from siad.image import load_rgb, resize_for_encoder
from siad.prompts import NORMAL_ANSWER, answer_text, describe

# Words that may stand in for a class name (`name_swap_prob`), so that the text side cannot lean on
# memorised class names.
GENERIC_NAMES: tuple[str, ...] = ("object", "part", "texture", "surface", "product", "material")


def _probability(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class PseudoAnomalyDataset(Dataset):
    """Normal images paired with pseudo-anomalies (eq. 1).

    samples: `Sample`s; anomalous ones (label 1) are dropped, every class present must have at
    least one normal image. image_size, resize_mode: the encoder input (`resize_for_encoder`).
    seed: the base seed. dataset_name: for the class descriptions (`siad.prompts.describe`).
    max_input_side, max_input_pixels: the bounds of `load_rgb` (the model's `SIADConfig` fields of the
    same names).

    Pseudo-anomaly options (keyword only; the defaults keep the first version's items exactly):
    kinds, weights: the mixture of `siad.data.pseudo` kinds (`siad.data.pseudo.mixture`): `kinds`
    defaults to the kinds of `weights`, or to ("cutpaste",) without weights; `weights` defaults to
    `default_weights()` restricted to `kinds`. foreign_prob: the probability that the
    source image comes from another class. position_edges: the inner edges of the 3 x 3 position
    grid of the answers, as fractions (`siad.answers.region_positions`; None: thirds).
    name_swap_prob: the probability that the class name (and so its description) is replaced, half
    the time by one of `generic_names`, otherwise by another class's name (by whichever exists if
    only one does).

    `dataset[i]` is a dict: "index", "image" (uint8 tensor 3 x S x S, the normal image),
    "anomaly_image" (uint8 3 x S x S), "anomaly_mask" (float32 S x S in {0, 1}),
    "anomaly_label" (int), "class_name" (the name the model is given, possibly swapped),
    "true_class_name", "description" (of "class_name"), "answer" (the pseudo-anomaly's target answer,
    from its mask), "blended" (bool: Poisson-blended), "kind" (the pseudo-anomaly kind made).
    """

    def __init__(self, samples: Iterable[Sample], image_size: int = 224, resize_mode: str = "squash",
                 seed: int = 0, dataset_name: str | None = None, max_input_side: int = VisionConfig.max_input_side,
                 max_input_pixels: int = VisionConfig.max_input_pixels, *, kinds: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, foreign_prob: float = 0.0,
                 position_edges: tuple[float, float] | None = None, name_swap_prob: float = 0.0,
                 generic_names: Sequence[str] = GENERIC_NAMES) -> None:
        all_samples = list(samples)
        if not all_samples:
            raise ValueError("PseudoAnomalyDataset: the sample list is empty")
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        if resize_mode not in ("squash", "center_crop"):
            raise ValueError(f"resize_mode must be 'squash' or 'center_crop', got {resize_mode!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        classes = list(dict.fromkeys(s.class_name for s in all_samples))
        normals = tuple(s for s in all_samples if s.label == 0)
        without = [c for c in classes if not any(s.class_name == c for s in normals)]
        if without:
            raise ValueError(f"PseudoAnomalyDataset: class(es) {without} have no normal image; "
                             f"training needs normal images of every class")
        self.samples: tuple[Sample, ...] = normals
        self.image_size = image_size
        self.resize_mode = resize_mode
        self.seed = seed
        self.dataset_name = dataset_name
        self.max_input_side = max_input_side
        self.max_input_pixels = max_input_pixels
        self.epoch = 0
        by_class: dict[str, list[int]] = {}
        for index, sample in enumerate(normals):
            by_class.setdefault(sample.class_name, []).append(index)
        self._by_class: dict[str, tuple[int, ...]] = {c: tuple(v) for c, v in by_class.items()}
        if isinstance(kinds, str):
            raise ValueError(f"kinds must be a sequence of kind names, got the string {kinds!r}")
        if kinds is None:
            kinds = (CUTPASTE,) if weights is None else tuple(weights)
        chosen, probabilities = mixture(weights, kinds)
        self.weights: dict[str, float] = dict(zip(chosen, probabilities.tolist()))
        self.foreign_prob = _probability(foreign_prob, "foreign_prob")
        self.position_edges = None if position_edges is None else check_edges(position_edges)
        self.name_swap_prob = _probability(name_swap_prob, "name_swap_prob")
        if isinstance(generic_names, str) or not all(isinstance(n, str) and n.strip() for n in generic_names):
            raise ValueError(f"generic_names must be a sequence of non-empty names, got {generic_names!r}")
        self.generic_names: tuple[str, ...] = tuple(generic_names)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the pseudo-anomalies of epoch `epoch` (a non-negative integer)."""
        if not isinstance(epoch, (int, np.integer)) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of item `index` at `epoch` (default: the current epoch)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])

    def load_image(self, index: int) -> np.ndarray:
        """Normal image `index` at the encoder resolution: S x S x 3 uint8."""
        rgb = load_rgb(self.samples[index].image_path, self.max_input_side, self.max_input_pixels).rgb
        return resize_for_encoder(rgb, self.image_size, self.resize_mode)

    def _source_index(self, index: int, rng: np.random.Generator) -> int:
        """The image the pseudo-anomaly may copy from: another class's with probability `foreign_prob`,
        else another image of the same class (the image itself if it is alone)."""
        own = self.samples[index].class_name
        if self.foreign_prob > 0 and len(self._by_class) > 1 and rng.random() < self.foreign_prob:
            classes = [c for c in self._by_class if c != own]
            images = self._by_class[classes[int(rng.integers(0, len(classes)))]]
            return images[int(rng.integers(0, len(images)))]
        peers = self._by_class[own]
        if len(peers) == 1:
            return index
        others = [p for p in peers if p != index]
        return others[int(rng.integers(0, len(peers) - 1))]

    def shown_class_name(self, index: int, epoch: int | None = None) -> str:
        """The class name item `index` gives the model at `epoch` (default: the current one): its own,
        or with probability `name_swap_prob` a generic word or another class's name."""
        own = self.samples[index].class_name
        if self.name_swap_prob == 0:
            return own
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index), 1])
        if rng.random() >= self.name_swap_prob:
            return own
        others = [c for c in self._by_class if c != own]
        if self.generic_names and (not others or rng.random() < 0.5):
            return self.generic_names[int(rng.integers(0, len(self.generic_names)))]
        return others[int(rng.integers(0, len(others)))] if others else own

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} normal images")
        index = index % len(self)
        sample = self.samples[index]
        rng = self.rng(index)
        source_index = self._source_index(index, rng)
        kind = choose_kind(rng, self.weights)
        image = self.load_image(index)
        source = image if source_index == index or not uses_source(kind) else self.load_image(source_index)
        pseudo = generate(kind, image, source, rng)
        name = self.shown_class_name(index)
        return {
            "index": index,
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "anomaly_image": torch.from_numpy(np.ascontiguousarray(pseudo.image.transpose(2, 0, 1))),
            "anomaly_mask": torch.from_numpy(pseudo.mask.astype(np.float32)),
            "anomaly_label": int(pseudo.label),
            "class_name": name,
            "true_class_name": sample.class_name,
            "description": describe(name, self.dataset_name),
            "answer": answer_text(region_positions(pseudo.mask, edges=self.position_edges)),
            "blended": bool(pseudo.blended),
            "kind": pseudo.kind,
        }


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The batch of eq. 1 from `PseudoAnomalyDataset` items: n normal images, then their n
    pseudo-anomalies (B = 2n, item k's pseudo-anomaly at n + k).

    "images": uint8 B x 3 x S x S (not normalised), "masks": float32 B x S x S in {0, 1} (zero for
    the normal images), "labels": long B, "class_names", "descriptions", "answers": lists of B str.
    """
    if not items:
        raise ValueError("collate_pairs: no items")
    normals = [item["image"] for item in items]
    anomalies = [item["anomaly_image"] for item in items]
    sizes = {tuple(t.shape) for t in normals + anomalies}
    if len(sizes) != 1:
        raise ValueError(f"collate_pairs: items of different image sizes {sorted(sizes)}")
    masks = torch.stack([item["anomaly_mask"] for item in items])
    names = [item["class_name"] for item in items]
    descriptions = [item["description"] for item in items]
    return {
        "images": torch.stack(normals + anomalies),
        "masks": torch.cat([torch.zeros_like(masks), masks]),
        "labels": torch.tensor([0] * len(items) + [int(item["anomaly_label"]) for item in items], dtype=torch.long),
        "class_names": names + names,
        "descriptions": descriptions + descriptions,
        "answers": [NORMAL_ANSWER] * len(items) + [item["answer"] for item in items],
    }
