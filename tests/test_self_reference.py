"""Zero-shot self-reference (siad.references.self_reference_*, config.map.self_reference_weight): an image
without references is compared with itself, and the LLM reads the fused maps in training as at inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import siad.network
from siad import SIADConfig
from siad.references import fuse_stage_maps, self_reference_distances, self_reference_maps
from tests.conftest import build_tiny


def _grid_tokens(side: int = 12, dim: int = 16, seed: int = 0, width: int | None = None) -> torch.Tensor:
    """1 x N x D tokens of a periodic 'texture' on a side x width grid (width: side by default), row by
    row: the token at (r, c) depends on (r % 2, c % 2) only."""
    width = side if width is None else width
    generator = torch.Generator().manual_seed(seed)
    motifs = torch.randn(2, 2, dim, generator=generator)
    rows = torch.arange(side).repeat_interleave(width)
    cols = torch.arange(width).repeat(side)
    return motifs[rows % 2, cols % 2][None].clone()


def test_a_break_of_the_images_own_regularity_is_the_farthest_patch():
    tokens = _grid_tokens()
    tokens[0, 6 * 12 + 5] = torch.randn(16, generator=torch.Generator().manual_seed(9)) * 3
    distances = self_reference_distances([tokens, tokens.clone()], [(12, 12), (12, 12)], radius=2)
    assert isinstance(distances, list) and len(distances) == 2
    assert all(d.shape == (1, 12, 12) and d.dtype == torch.float32 for d in distances)
    grid = distances[0][0]
    assert divmod(int(grid.argmax()), 12) == (6, 5)
    far = torch.ones(12, 12, dtype=torch.bool)
    far[3:10, 2:9] = False  # outside the planted patch's 3 x 3 aggregation and the exclusion radius
    assert float(grid[far].max()) < 1e-5  # a repeating texture matches itself elsewhere
    assert torch.equal(distances[0][0], distances[1][0])


def test_stages_on_grids_of_their_own():
    """Each stage is read on its own grid (a CNN's stages differ in size and need not be square)."""
    wide = _grid_tokens(side=8, width=14)
    wide[0, 3 * 14 + 10] = torch.randn(16, generator=torch.Generator().manual_seed(9)) * 3
    square = _grid_tokens(side=12)
    distances = self_reference_distances([wide, square], [(8, 14), (12, 12)], radius=2)
    assert [tuple(d.shape) for d in distances] == [(1, 8, 14), (1, 12, 12)]
    changed = distances[0][0] > 1e-3  # the planted patch's 3 x 3 aggregation window, read row by row
    expected = torch.zeros(8, 14, dtype=torch.bool)
    expected[2:5, 9:12] = True
    assert torch.equal(changed, expected)
    transposed = wide.view(1, 8, 14, -1).transpose(1, 2).reshape(1, 14 * 8, -1)  # the same image, turned
    assert torch.allclose(self_reference_distances([transposed], [(14, 8)], radius=2)[0][0], distances[0][0].T,
                          atol=1e-6)
    assert float(distances[1].max()) < 1e-5  # the unbroken texture matches itself everywhere
    maps = self_reference_maps(distances, 32)
    assert maps.shape == (1, 2, 32, 32)


def test_the_radius_excludes_the_patchs_own_surroundings():
    """A 2 x 2 defect: with radius 0 each of its patches finds a twin inside the defect; radius 2 does not."""
    tokens = _grid_tokens()
    odd = torch.randn(16, generator=torch.Generator().manual_seed(3)) * 3
    for r, c in ((6, 6), (6, 7), (7, 6), (7, 7)):
        tokens[0, r * 12 + c] = odd
    near = self_reference_distances([tokens], [(12, 12)], radius=0)[0][0]
    far = self_reference_distances([tokens], [(12, 12)], radius=2)[0][0]
    assert float(far[6, 6]) > float(near[6, 6]) + 0.05
    with pytest.raises(ValueError, match="no patch to compare"):
        self_reference_distances([tokens], [(12, 12)], radius=6)
    with pytest.raises(ValueError, match="no patch to compare"):  # the shorter side of the grid decides
        self_reference_distances([_grid_tokens(side=4, width=30)], [(4, 30)], radius=2)
    with pytest.raises(ValueError, match="do not fill a 12 x 12 grid"):
        self_reference_distances([tokens[:, :-1]], [(12, 12)], radius=1)


def test_self_reference_maps_use_the_images_own_median():
    generator = torch.Generator().manual_seed(0)
    distances = [torch.rand(3, 8, 8, generator=generator), torch.rand(3, 4, 6, generator=generator)]
    maps = self_reference_maps(distances, 32)
    assert maps.shape == (3, 2, 32, 32) and float(maps.min()) >= 0 and float(maps.max()) < 1
    scaled = [d.clone() for d in distances]
    for d in scaled:
        d[1] *= 7.0  # one image's distances all larger: its map does not change (scale-free per image)
    assert torch.allclose(self_reference_maps(scaled, 32), maps, atol=1e-6)
    for k, d in enumerate(distances):  # d / (d + the image's median at that stage), upsampled
        median = d.flatten(1).median(dim=1).values.view(3, 1, 1)
        assert torch.allclose(maps[:, k, 0, 0], (d / (d + median))[:, 0, 0], atol=1e-6)


def test_per_image_fusion_weights():
    generator = torch.Generator().manual_seed(1)
    text, reference = torch.rand(2, 3, 4, 4, generator=generator), torch.rand(2, 3, 4, 4, generator=generator)
    fused = fuse_stage_maps(text, reference, torch.tensor([0.0, 0.5]))
    assert torch.equal(fused[0], text[0]) and torch.allclose(fused[1], 0.5 * text[1] + 0.5 * reference[1])
    with pytest.raises(ValueError, match="one per image"):
        fuse_stage_maps(text, reference, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="few-shot weight"):
        fuse_stage_maps(text, reference, torch.tensor([0.1, 1.2]))


@pytest.mark.parametrize("field,value", [("self_reference_weight", -0.1), ("self_reference_weight", 1.5),
                                         ("self_reference_radius", -1), ("self_reference_radius", 1.5)])
def test_config_checks_the_self_reference_fields(field, value):
    with pytest.raises(ValueError, match=field):
        SIADConfig.tiny(map={field: value})


def _images(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(count)]


def test_detect_weighs_banked_and_unbanked_images_by_their_own_weights(monkeypatch):
    plain = build_tiny(0).eval()
    selfref = build_tiny(0, map=dict(self_reference_weight=0.6)).eval()
    images = _images(2, seed=4)
    off, on = plain.detect(images, "gear", chat=False), selfref.detect(images, "gear", chat=False)
    assert all(not np.allclose(a.anomaly_map, b.anomaly_map) for a, b in zip(off, on))
    assert all(r.mode == "zero-shot" and 0.0 <= r.score <= 1.0 for r in on)
    weights = []
    fuse = siad.network.fuse_stage_maps

    def spy(text, reference, weight, mode="linear"):
        weights.append(torch.as_tensor(weight).tolist())
        return fuse(text, reference, weight, mode)

    monkeypatch.setattr(siad.network, "fuse_stage_maps", spy)
    bank = selfref.build_references(_images(2, seed=5), "gear")
    mixed = selfref.detect(images + images[:1], ["gear", "wood", "gear"], chat=False, references={"gear": bank})
    assert weights == [pytest.approx([selfref.config.map.few_shot_weight, 0.6, selfref.config.map.few_shot_weight])]
    alone = selfref.detect([images[1]], "wood", chat=False)[0]
    assert np.allclose(mixed[1].anomaly_map, alone.anomaly_map, atol=1e-6)  # no bank: the self-reference alone


def test_training_feeds_the_llm_the_fused_maps(monkeypatch):
    """With the self-reference on, PEM reads (1 - w) M_k + w R_self_k in training (as in detect); the map
    losses still read the text maps."""
    from tests.test_model import _batch  # a small training batch

    model = build_tiny(0, map=dict(self_reference_weight=0.5))
    seen = []
    map_tokens = model.map_tokens

    def spy(stage_maps):
        seen.append(stage_maps.detach().clone())
        return map_tokens(stage_maps)

    monkeypatch.setattr(model, "map_tokens", spy)
    batch = _batch()
    torch.manual_seed(0)
    out = model(batch)
    assert torch.isfinite(out.loss)
    with torch.no_grad():
        vision = model.encode_images(model._pixels(batch["images"]))
        text_maps = model.anomaly_maps(model.visual_features(vision), model.class_text_features(batch["class_names"]),
                                       vision.grids)
        reference = model._reference_maps(vision, model.visual_features(vision), None)
    expected = fuse_stage_maps(text_maps.stage_maps, reference.maps, reference.weights)
    assert torch.allclose(seen[0], expected, atol=1e-5)
    assert not torch.allclose(seen[0], text_maps.stage_maps, atol=1e-3)


def test_with_a_bank_the_reference_map_is_the_mean_of_the_bank_and_self_reference_maps(monkeypatch):
    from siad.references import reference_distances, reference_maps

    model = build_tiny(0, map=dict(self_reference_weight=0.4)).eval()
    images = _images(2, seed=6)
    bank = model.build_references(_images(2, seed=7), "gear")
    captured = []
    fuse = siad.network.fuse_stage_maps

    def spy(text, reference, weight, mode="linear"):
        captured.append(reference.clone())
        return fuse(text, reference, weight, mode)

    monkeypatch.setattr(siad.network, "fuse_stage_maps", spy)
    model.detect(images, "gear", chat=False, references=bank)
    pixels, _ = model.prepare_images(images)
    with torch.no_grad():
        vision = model.encode_images(model._pixels(pixels))
    size = model.config.vision.image_size
    found = reference_maps(reference_distances(vision.stage_tokens, vision.grids, bank), bank.normal_scale, size)
    own = self_reference_maps(self_reference_distances(vision.stage_tokens, vision.grids, 2), size)
    assert torch.allclose(captured[0], 0.5 * (found + own), atol=1e-5)
