"""The training dataset of eq. 1: pairs, collation, determinism per (seed, epoch, index), laziness."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import siad.data.dataset as dataset_module
from siad.answers import answer_from_mask
from siad.data import PseudoAnomalyDataset, Sample, collate_pairs, load_dataset
from siad.image import load_rgb, resize_for_encoder
from siad.prompts import NORMAL_ANSWER, describe

SIZE = 48


def save_texture(path: Path, seed: int, shape: tuple[int, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = cv2.GaussianBlur((rng.random(shape) * 255).astype(np.uint8), (5, 5), 1.5)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture()
def samples(tmp_path: Path) -> list[Sample]:
    """An MVTec-format tree: 'bottle' with 3 normal images of different sizes, 'tile' with one
    grey normal image, and an anomalous test image (dropped by the dataset)."""
    root = tmp_path / "mvtec"
    for k, shape in enumerate([(40, 60, 3), (64, 64, 3), (50, 30, 3)]):
        save_texture(root / "bottle" / "train" / "good" / f"{k:03d}.png", k, shape)
    save_texture(root / "tile" / "train" / "good" / "000.png", 10, (56, 56))
    save_texture(root / "bottle" / "test" / "broken_large" / "000.png", 20, (40, 60, 3))
    mask_dir = root / "bottle" / "ground_truth" / "broken_large"
    mask_dir.mkdir(parents=True)
    Image.fromarray(np.full((40, 60), 255, np.uint8)).save(mask_dir / "000_mask.png")
    train = load_dataset("mvtec", root, "train")
    anomalous = [s for s in load_dataset("mvtec", root, "test", classes=["bottle"]) if s.label == 1]
    return train + anomalous


def items_equal(a: dict, b: dict) -> bool:
    return (torch.equal(a["image"], b["image"]) and torch.equal(a["anomaly_image"], b["anomaly_image"])
            and torch.equal(a["anomaly_mask"], b["anomaly_mask"]) and a["answer"] == b["answer"])


def test_items_and_collate(samples: list[Sample]) -> None:
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE, dataset_name="mvtec")
    assert len(dataset) == 4  # the anomalous sample is dropped
    items = [dataset[i] for i in range(len(dataset))]
    batch = collate_pairs(items)
    n = len(items)
    assert batch["images"].shape == (2 * n, 3, SIZE, SIZE) and batch["images"].dtype == torch.uint8
    assert batch["masks"].shape == (2 * n, SIZE, SIZE) and batch["masks"].dtype == torch.float32
    assert set(torch.unique(batch["masks"]).tolist()) <= {0.0, 1.0}
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0] * n + [1] * n
    names = [s.class_name for s in dataset.samples]
    assert batch["class_names"] == names + names
    assert batch["descriptions"] == [describe(c, "mvtec") for c in names + names]
    assert batch["descriptions"][0].startswith("This is a photo of a bottle")
    # normal images first, exactly as the inference path decodes and resizes them
    for k, sample in enumerate(dataset.samples):
        expected = resize_for_encoder(load_rgb(sample.image_path).rgb, SIZE, "squash")
        assert torch.equal(batch["images"][k], torch.from_numpy(expected.copy()).permute(2, 0, 1))
        assert not batch["masks"][k].any()
    # answers are those of the masks; pseudo-anomalies change only inside their mask
    for k in range(2 * n):
        assert batch["answers"][k] == answer_from_mask(batch["masks"][k].numpy())
    assert batch["answers"][:n] == [NORMAL_ANSWER] * n
    for k in range(n):
        normal, pseudo, mask = batch["images"][k], batch["images"][n + k], batch["masks"][n + k].bool()
        assert mask.any() and not torch.equal(normal, pseudo)
        assert torch.equal(normal[:, ~mask], pseudo[:, ~mask])


def test_determinism_per_seed_epoch_index(samples: list[Sample]) -> None:
    first = PseudoAnomalyDataset(samples, image_size=SIZE, seed=3)
    second = PseudoAnomalyDataset(list(samples), image_size=SIZE, seed=3)
    order_a = [first[i] for i in range(len(first))]
    order_b = [second[i] for i in reversed(range(len(second)))][::-1]  # fetch order does not matter
    assert all(items_equal(a, b) for a, b in zip(order_a, order_b))
    first.set_epoch(1)
    epoch_1 = [first[i] for i in range(len(first))]
    assert sum(not items_equal(a, b) for a, b in zip(order_a, epoch_1)) >= len(first) - 1
    second.set_epoch(1)  # a resumed run at epoch 1 sees the same data
    assert all(items_equal(a, second[i]) for i, a in enumerate(epoch_1))
    first.set_epoch(0)
    assert all(items_equal(a, first[i]) for i, a in enumerate(order_a))
    other_seed = PseudoAnomalyDataset(samples, image_size=SIZE, seed=4)
    assert any(not items_equal(a, other_seed[i]) for i, a in enumerate(order_a))
    with pytest.raises(ValueError, match="epoch"):
        first.set_epoch(-1)


def test_source_from_same_class(samples: list[Sample], monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE)
    loaded: list[int] = []
    original = PseudoAnomalyDataset.load_image

    def spy(self: PseudoAnomalyDataset, index: int) -> np.ndarray:
        loaded.append(index)
        return original(self, index)

    monkeypatch.setattr(PseudoAnomalyDataset, "load_image", spy)
    classes = [s.class_name for s in dataset.samples]
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            loaded.clear()
            dataset[index]
            assert loaded[0] == index
            if classes.count(classes[index]) > 1:  # another image of the same class
                assert len(loaded) == 2 and loaded[1] != index and classes[loaded[1]] == classes[index]
            else:  # the only image of its class: the image itself, decoded once
                assert loaded == [index]


def test_lazy(samples: list[Sample], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = dataset_module.load_rgb
    monkeypatch.setattr(dataset_module, "load_rgb", lambda *a, **k: calls.append(a) or real(*a, **k))
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE)
    assert calls == []  # nothing decoded at construction
    for value in vars(dataset).values():
        assert not isinstance(value, (np.ndarray, torch.Tensor))
    assert all(isinstance(s.image_path, Path) for s in dataset.samples)
    assert len(pickle.dumps(dataset)) < 20_000  # paths, not pixels: cheap to send to workers
    dataset[0]
    assert 1 <= len(calls) <= 2


def test_dataloader_and_center_crop(samples: list[Sample]) -> None:
    dataset = PseudoAnomalyDataset(samples, image_size=32, resize_mode="center_crop", seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False, collate_fn=collate_pairs)
    batches = list(loader)
    assert [b["images"].shape[0] for b in batches] == [6, 2]
    assert batches[0]["images"].shape[1:] == (3, 32, 32)


def test_errors(samples: list[Sample]) -> None:
    with pytest.raises(ValueError, match="empty"):
        PseudoAnomalyDataset([])
    only_anomalous = Sample(samples[-1].image_path, samples[-1].mask_path, "cable", "bent_wire", 1)
    with pytest.raises(ValueError, match="cable"):
        PseudoAnomalyDataset(samples + [only_anomalous])
    with pytest.raises(ValueError, match="resize_mode"):
        PseudoAnomalyDataset(samples, resize_mode="stretch")
    with pytest.raises(ValueError, match="no items"):
        collate_pairs([])
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_the_dataset_keeps_the_models_pixel_budget(samples):
    """An image over `max_input_pixels` is refused by name before it is decoded (train.py passes the
    model's bound)."""
    tight = PseudoAnomalyDataset(samples, image_size=SIZE, max_input_pixels=40 * 60)
    first = tight.samples[0]
    assert tight.load_image(0).shape == (SIZE, SIZE, 3)  # 40 x 60: exactly at the budget
    with pytest.raises(ValueError, match=r"64 x 64 pixels .*max_input_pixels") as refused:
        tight.load_image(1)
    assert str(tight.samples[1].image_path) in str(refused.value) and first.image_path.name == "000.png"


# --- pseudo-anomaly options: kinds/weights, foreign_prob, position_edges, name_swap_prob ---------


def first_version_item(dataset: PseudoAnomalyDataset, index: int) -> dict:
    """What the first version of `__getitem__` gave (its code, kept here as the reference)."""
    from siad.data.cutpaste import cutpaste_poisson
    from siad.prompts import answer_text

    sample = dataset.samples[index]
    rng = np.random.default_rng([dataset.seed, dataset.epoch, index])
    peers = [i for i, s in enumerate(dataset.samples) if s.class_name == sample.class_name]
    if len(peers) > 1:
        pick = int(rng.integers(0, len(peers) - 1))
        source_index = [p for p in peers if p != index][pick]
    else:
        source_index = index
    image = dataset.load_image(index)
    source = image if source_index == index else dataset.load_image(source_index)
    pseudo = cutpaste_poisson(image, source, rng)
    return {"image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "anomaly_image": torch.from_numpy(pseudo.image.transpose(2, 0, 1).copy()),
            "anomaly_mask": torch.from_numpy(pseudo.mask.astype(np.float32)), "answer": answer_text(pseudo.positions),
            "class_name": sample.class_name, "description": describe(sample.class_name, dataset.dataset_name),
            "blended": pseudo.blended}


def test_default_options_give_the_first_versions_items(samples: list[Sample]) -> None:
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE, seed=5, dataset_name="mvtec")
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item, reference = dataset[index], first_version_item(dataset, index)
            assert items_equal(item, reference)
            assert item["class_name"] == item["true_class_name"] == reference["class_name"]
            assert item["description"] == reference["description"] and item["blended"] == reference["blended"]
            assert item["kind"] == "cutpaste"


def test_mixture_of_kinds(samples: list[Sample]) -> None:
    from siad.data.pseudo import KINDS

    kinds = [k for k in KINDS if k.startswith(("scar:", "spots:"))]
    dataset = PseudoAnomalyDataset(samples, image_size=SIZE, kinds=kinds, seed=2)
    assert set(dataset.weights) == set(kinds) and abs(sum(dataset.weights.values()) - 1) < 1e-9
    made = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            made.add(item["kind"].split(":")[0])
            mask = item["anomaly_mask"].bool()
            assert mask.any() and item["anomaly_label"] == 1
            assert torch.equal(item["image"][:, ~mask], item["anomaly_image"][:, ~mask])
            assert item["answer"] == answer_from_mask(item["anomaly_mask"].numpy())
    assert made <= {"scar", "spots"} and made
    again = PseudoAnomalyDataset(samples, image_size=SIZE, kinds=kinds, seed=2)
    again.set_epoch(3)
    assert all(items_equal(dataset[i], again[i]) for i in range(len(dataset)))
    # weights alone give the kinds; one kind of weight 1 is that kind
    only = PseudoAnomalyDataset(samples, image_size=SIZE, weights={"blob:tone": 1.0})
    assert {only[i]["kind"] for i in range(len(only))} <= {"blob:tone", "blob:push"}


def test_foreign_source(samples: list[Sample], monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[int] = []
    original = PseudoAnomalyDataset.load_image

    def spy(self: PseudoAnomalyDataset, index: int) -> np.ndarray:
        loaded.append(index)
        return original(self, index)

    monkeypatch.setattr(PseudoAnomalyDataset, "load_image", spy)
    foreign = PseudoAnomalyDataset(samples, image_size=SIZE, foreign_prob=1.0)
    classes = [s.class_name for s in foreign.samples]
    for epoch in range(3):
        foreign.set_epoch(epoch)
        for index in range(len(foreign)):
            loaded.clear()
            foreign[index]
            assert len(loaded) == 2 and classes[loaded[1]] != classes[index]
    # a kind that does not read its source decodes one image only
    own = PseudoAnomalyDataset(samples, image_size=SIZE, kinds=["blob:blur"], foreign_prob=1.0)
    loaded.clear()
    own[0]
    assert loaded == [0]
    half = PseudoAnomalyDataset(samples, image_size=SIZE, foreign_prob=0.5)
    sources = []
    for epoch in range(12):
        half.set_epoch(epoch)
        loaded.clear()
        half[0]
        sources.append(classes[loaded[1]] != classes[0])
    assert 0 < sum(sources) < len(sources)


def test_position_edges(samples: list[Sample]) -> None:
    edges = (0.45, 0.55)
    thirds = PseudoAnomalyDataset(samples, image_size=SIZE, kinds=["spots:flat_far"])
    narrow = PseudoAnomalyDataset(samples, image_size=SIZE, kinds=["spots:flat_far"], position_edges=edges)
    differs = 0
    for epoch in range(4):
        thirds.set_epoch(epoch)
        narrow.set_epoch(epoch)
        for index in range(len(narrow)):
            a, b = thirds[index], narrow[index]
            assert torch.equal(a["anomaly_mask"], b["anomaly_mask"])  # the same pseudo-anomaly
            assert b["answer"] == answer_from_mask(b["anomaly_mask"].numpy(), edges=edges)
            differs += a["answer"] != b["answer"]
    assert differs > 0
    with pytest.raises(ValueError, match="edges"):
        PseudoAnomalyDataset(samples, position_edges=(0.6, 0.4))


def test_name_swap(samples: list[Sample]) -> None:
    plain = PseudoAnomalyDataset(samples, image_size=SIZE, dataset_name="mvtec")
    swapped = PseudoAnomalyDataset(samples, image_size=SIZE, dataset_name="mvtec", name_swap_prob=1.0,
                                   generic_names=("object", "surface"))
    seen = set()
    for epoch in range(8):
        plain.set_epoch(epoch)
        swapped.set_epoch(epoch)
        for index in range(len(swapped)):
            a, b = plain[index], swapped[index]
            assert items_equal(a, b)  # the swap never changes the images, masks or answers
            assert b["true_class_name"] == a["class_name"] != b["class_name"]
            assert b["class_name"] in {"object", "surface", "bottle", "tile"}
            assert b["description"] == describe(b["class_name"], "mvtec")
            seen.add(b["class_name"])
    assert {"object", "surface"} <= seen and seen & {"bottle", "tile"}
    batch = collate_pairs([swapped[0], swapped[1]])
    assert batch["class_names"][:2] == batch["class_names"][2:] == [swapped[0]["class_name"], swapped[1]["class_name"]]
    some = PseudoAnomalyDataset(samples, image_size=SIZE, name_swap_prob=0.5)
    names = [some.shown_class_name(i, epoch) for epoch in range(10) for i in range(len(some))]
    truths = [s.class_name for _ in range(10) for s in some.samples]
    assert 0 < sum(n != t for n, t in zip(names, truths)) < len(names)
    assert names == [some.shown_class_name(i, epoch) for epoch in range(10) for i in range(len(some))]


def test_option_errors(samples: list[Sample]) -> None:
    with pytest.raises(ValueError, match="foreign_prob"):
        PseudoAnomalyDataset(samples, foreign_prob=1.5)
    with pytest.raises(ValueError, match="name_swap_prob"):
        PseudoAnomalyDataset(samples, name_swap_prob=-0.1)
    with pytest.raises(ValueError, match="kind"):
        PseudoAnomalyDataset(samples, kinds=["scar:glitter"])
    with pytest.raises(ValueError, match="kinds must be a sequence"):
        PseudoAnomalyDataset(samples, kinds="scar:blur")
    with pytest.raises(ValueError, match="generic_names"):
        PseudoAnomalyDataset(samples, generic_names=("object", ""))
