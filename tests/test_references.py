"""Few-shot reference banks (siad.references): files, fingerprints, coreset, search, maps, fusion."""

from __future__ import annotations

import copy
import json
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siad.modules import AnomalyMapHead
from siad.references import (ReferenceBank, aggregate_patches, bank_from_features, bank_paths, build_reference_bank,
                             check_bank, fuse_stage_maps, kcenter_greedy, model_fingerprint, nearest_distances,
                             reference_distances, reference_maps)
from tests.conftest import build_tiny

GRID = 16  # the tiny preset: 224 px, patch 14
GRIDS = [(GRID, GRID)] * 4  # every stage of the tiny preset's ViT


def _images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def bank(tiny_model) -> ReferenceBank:
    return build_reference_bank(tiny_model, _images(3), "  metal   nut ")


@pytest.fixture(scope="module")
def other_model():
    return build_tiny(1).eval()


def _stage_tokens(model, images) -> list[torch.Tensor]:
    pixels, _ = model.prepare_images(images)
    with torch.no_grad():
        vision = model.encode_images(pixels)
    assert vision.grids == GRIDS
    return vision.stage_tokens


def _fake_bank(rows: list[torch.Tensor], **changes) -> ReferenceBank:
    fields = dict(class_name="gear", features="trunk", num_shots=4, stage_blocks=tuple(range(len(rows))),
                  grids=tuple(GRIDS[:len(rows)]), fingerprint="trunk:a:b", stages=tuple(rows),
                  normal_scale=torch.full((len(rows),), 0.1), max_bank_patches=None, seed=0)
    fields.update(changes)
    return ReferenceBank(**fields)


# ------------------------------------------------------------------------------------ building
def test_bank_fields_and_shapes(tiny_model, bank):
    config = tiny_model.config
    assert bank.class_name == "metal nut"
    assert bank.num_shots == 3 and bank.features == "trunk" and bank.grids == tuple(GRIDS)
    assert bank.stage_blocks == tuple(config.vision.stages)
    assert [tuple(s.shape) for s in bank.stages] == [(3 * GRID * GRID, config.vision.width)] * config.num_stages
    assert bank.fingerprint == model_fingerprint(tiny_model, "trunk")
    for rows in bank.stages:
        assert torch.allclose(rows.norm(dim=-1), torch.ones(rows.shape[0]), atol=1e-5)
    assert bool((bank.normal_scale > 0).all())
    assert bank.nbytes == sum(bank.stage_nbytes) + 4 * config.num_stages


def test_visual_bank_uses_adapted_features(tiny_model):
    visual = build_reference_bank(tiny_model, _images(2), "gear", features="visual")
    assert visual.features == "visual" and visual.fingerprint.startswith("visual:")
    assert [s.shape[1] for s in visual.stages] == [tiny_model.config.embed_dim] * tiny_model.config.num_stages
    pixels, _ = tiny_model.prepare_images(_images(2))
    with torch.no_grad():
        adapted = tiny_model.visual_features(tiny_model.encode_images(pixels))
    expected = aggregate_patches(adapted[2], GRIDS[2]).reshape(-1, adapted[2].shape[-1])
    assert torch.allclose(visual.stages[2], expected, atol=1e-6)


def test_build_rejects_bad_arguments(tiny_model):
    with pytest.raises(ValueError, match="no reference images"):
        build_reference_bank(tiny_model, [], "gear")
    with pytest.raises(ValueError, match="class name"):
        build_reference_bank(tiny_model, _images(1), "  ")
    with pytest.raises(ValueError, match="features"):
        build_reference_bank(tiny_model, _images(1), "gear", features="pixels")


def test_bank_construction_is_validated(bank):
    rows = list(bank.stages)
    with pytest.raises(ValueError, match="max_bank_patches"):
        _fake_bank(rows, num_shots=3, max_bank_patches=10)
    with pytest.raises(ValueError, match="stage blocks"):
        _fake_bank(rows, stage_blocks=(0, 1))
    with pytest.raises(ValueError, match="normal_scale"):
        _fake_bank(rows, normal_scale=torch.tensor([0.1, 0.0, 0.1, 0.1]))
    with pytest.raises(ValueError, match="class_name"):
        _fake_bank(rows, class_name=" gear")
    with pytest.raises(ValueError, match="more than 1 shots"):
        _fake_bank(rows, num_shots=1)


# ------------------------------------------------------------------------------------ files
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_load_round_trip_is_exact(bank, tmp_path, dtype):
    original = bank.to(dtype=dtype)
    tensors_path, sidecar_path = original.save(tmp_path / "banks" / "nut")
    assert (tensors_path.name, sidecar_path.name) == ("nut.safetensors", "nut.json")
    assert bank_paths(tensors_path) == (tensors_path, sidecar_path)
    loaded = ReferenceBank.load(tmp_path / "banks" / "nut.safetensors")
    for name in ("class_name", "features", "num_shots", "stage_blocks", "grids", "fingerprint",
                 "max_bank_patches", "seed"):
        assert getattr(loaded, name) == getattr(original, name), name
    assert loaded.dtype == dtype
    for a, b in zip(loaded.stages, original.stages, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(loaded.normal_scale, original.normal_scale)
    assert not list((tmp_path / "banks").glob("*.tmp"))
    with open(tensors_path, "rb") as handle:  # a safetensors file: 8-byte header length, then JSON
        (length,) = np.frombuffer(handle.read(8), dtype="<u8")
        assert json.loads(handle.read(int(length)))["__metadata__"]["format"] == "siad-reference-bank"


def _edit_sidecar(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    for key, value in changes.items():
        if value is None and key != "max_bank_patches":
            del data[key]
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes, message", [
    (dict(class_name="screw"), "sidecar was edited"),
    (dict(shapes=[[1, 32]] * 4), "sidecar was edited"),
    (dict(dtype="float64"), "dtype must be one of"),
    (dict(version=99), "version"),
    (dict(format="other"), "not a reference-bank sidecar"),
    (dict(extra=1), "unknown fields"),
    (dict(seed=None), "missing fields"),
    (dict(num_shots="3"), "num_shots"),
    (dict(sha256="0" * 64), "checksum"),
])
def test_load_refuses_an_edited_sidecar(bank, tmp_path, changes, message):
    tensors_path, sidecar_path = bank.save(tmp_path / "nut")
    _edit_sidecar(sidecar_path, **changes)
    with pytest.raises(ValueError, match=message):
        ReferenceBank.load(tensors_path)


def test_load_refuses_other_or_broken_files(bank, tmp_path, tiny_model):
    tensors_path, sidecar_path = bank.save(tmp_path / "nut")
    other = build_reference_bank(tiny_model, _images(2, seed=5), "metal nut")
    other_tensors, _ = other.save(tmp_path / "other")
    tensors_path.write_bytes(other_tensors.read_bytes())  # the tensors of another bank under this sidecar
    with pytest.raises(ValueError, match="checksum"):
        ReferenceBank.load(tensors_path)
    sidecar_path.write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        ReferenceBank.load(tensors_path)
    with pytest.raises(FileNotFoundError):
        ReferenceBank.load(tmp_path / "missing")


def test_load_refuses_inconsistent_tensors(bank, tmp_path):
    """A file written by hand with a matching checksum but tensors that break the rules."""
    from safetensors.torch import save_file

    tensors_path, sidecar_path = bank.save(tmp_path / "nut")
    sidecar = json.loads(sidecar_path.read_text())
    fields = {k: v for k, v in sidecar.items() if k != "sha256"}
    tensors = {f"stage_{k}": s.clone() for k, s in enumerate(bank.stages)}
    tensors["normal_scale"] = bank.normal_scale.clone()
    tensors["stage_1"][0] *= 2.0  # a row that is not unit length
    save_file(tensors, str(tensors_path), metadata={"format": "siad-reference-bank", "bank": json.dumps(fields)})
    import hashlib
    sidecar_path.write_text(json.dumps({**fields, "sha256": hashlib.sha256(tensors_path.read_bytes()).hexdigest()}))
    with pytest.raises(ValueError, match="stage_1 holds non-finite or non-normalised rows"):
        ReferenceBank.load(tensors_path)


def test_load_reads_a_version_1_bank(bank, tmp_path):
    """Banks written before the grids were explicit (version 1: one square `grid_size`) still load."""
    import hashlib

    from safetensors.torch import save_file

    tensors_path, sidecar_path = bank.save(tmp_path / "nut")
    fields = {k: v for k, v in json.loads(sidecar_path.read_text()).items() if k != "sha256"}
    assert fields["version"] == 2 and fields["grids"] == [[GRID, GRID]] * 4
    del fields["grids"]
    fields.update(version=1, grid_size=GRID)
    tensors = {f"stage_{k}": s.clone() for k, s in enumerate(bank.stages)}
    tensors["normal_scale"] = bank.normal_scale.clone()
    save_file(tensors, str(tensors_path), metadata={"format": "siad-reference-bank", "bank": json.dumps(fields)})
    sidecar_path.write_text(json.dumps({**fields, "sha256": hashlib.sha256(tensors_path.read_bytes()).hexdigest()}))
    loaded = ReferenceBank.load(tensors_path)
    assert loaded.grids == tuple(GRIDS) and loaded.digest() == bank.digest()


# ------------------------------------------------------------------------------------ fingerprints and checks
def test_check_bank_accepts_its_model_and_class(tiny_model, bank):
    check_bank(bank, model_fingerprint(tiny_model, "trunk"), "metal nut")
    check_bank(bank, model_fingerprint(tiny_model, "trunk"), " metal  nut")


def test_check_bank_refuses_another_model(other_model, bank):
    with pytest.raises(ValueError, match="another model \\(different weights\\)"):
        check_bank(bank, model_fingerprint(other_model, "trunk"), "metal nut")


def test_check_bank_refuses_another_class(tiny_model, bank):
    with pytest.raises(ValueError, match="for class 'metal nut', not 'screw'"):
        check_bank(bank, model_fingerprint(tiny_model, "trunk"), "screw")


def test_check_bank_refuses_other_features(tiny_model, bank):
    with pytest.raises(ValueError, match="holds 'trunk' features"):
        check_bank(bank, model_fingerprint(tiny_model, "visual"), "metal nut")


@pytest.mark.parametrize("changes", [
    dict(vision=dict(stages=(0, 1, 3)), text=dict(stage_phrases=("a", "b", "c"))),
    dict(vision=dict(resize_mode="center_crop")),
    dict(vision=dict(image_mean=(0.5, 0.5, 0.5))),
])
def test_check_bank_refuses_another_configuration(tiny_model, bank, changes):
    """Same weights, a config that changes the features: the configuration is named."""
    same_weights = types.SimpleNamespace(config=tiny_model.config.replace(**changes),
                                         vision_encoder=tiny_model.vision_encoder)
    with pytest.raises(ValueError, match="another model configuration"):
        check_bank(bank, model_fingerprint(same_weights, "trunk"), "metal nut")


def test_fingerprint_ignores_settings_that_keep_the_features(tiny_model):
    """The threshold, the LLM and the text side do not change the trunk features."""
    other = types.SimpleNamespace(config=tiny_model.config.replace(map=dict(threshold=0.9), llm=dict(max_new_tokens=3), text=dict(num_blocks=1)),
                                  vision_encoder=tiny_model.vision_encoder)
    assert model_fingerprint(other, "trunk") == model_fingerprint(tiny_model, "trunk")


def test_fingerprint_follows_weight_changes_and_dtype(tiny_model):
    holder = types.SimpleNamespace(config=tiny_model.config, vision_encoder=copy.deepcopy(tiny_model.vision_encoder))
    before = model_fingerprint(holder, "trunk")
    assert model_fingerprint(holder, "trunk") == before  # cached, same value
    block = holder.vision_encoder.modality_trunks["vision"].blocks[2]
    with torch.no_grad():
        next(block.parameters()).add_(0.05)  # an in-place update, as an optimizer step does
    changed = model_fingerprint(holder, "trunk")
    assert changed != before
    half = types.SimpleNamespace(config=tiny_model.config,
                                 vision_encoder=copy.deepcopy(holder.vision_encoder).to(torch.bfloat16))
    assert model_fingerprint(half, "trunk") == changed  # a bfloat16 copy of the same weights


def test_fingerprint_of_visual_features_covers_the_adapter(tiny_model):
    model = build_tiny(0).eval()
    assert model_fingerprint(model, "visual") == model_fingerprint(tiny_model, "visual")
    trunk = model_fingerprint(model, "trunk")
    with torch.no_grad():
        model.stage_projection.linears[0].weight.mul_(1.5)
    assert model_fingerprint(model, "visual") != model_fingerprint(tiny_model, "visual")
    assert model_fingerprint(model, "trunk") == trunk


# ------------------------------------------------------------------------------------ coreset
def test_coreset_bound_and_seed(tiny_model):
    tokens = _stage_tokens(tiny_model, _images(2))
    bounded = bank_from_features(tokens, GRIDS, class_name="gear", features="trunk", stage_blocks=(0, 1, 2, 3),
                                 fingerprint="trunk:a:b", max_bank_patches=100, seed=3)
    assert [s.shape[0] for s in bounded.stages] == [100] * 4
    again = bank_from_features(tokens, GRIDS, class_name="gear", features="trunk", stage_blocks=(0, 1, 2, 3),
                               fingerprint="trunk:a:b", max_bank_patches=100, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(bounded.stages, again.stages))
    full = bank_from_features(tokens, GRIDS, class_name="gear", features="trunk", stage_blocks=(0, 1, 2, 3),
                              fingerprint="trunk:a:b", max_bank_patches=None)
    assert [s.shape[0] for s in full.stages] == [2 * GRID * GRID] * 4
    # the coreset rows are rows of the full bank, and the normal scale is computed before the bound
    for small, big in zip(bounded.stages, full.stages):
        assert bool((small[:, None] == big[None]).all(dim=-1).any(dim=1).all())
    assert torch.equal(bounded.normal_scale, full.normal_scale)


def test_coreset_keeps_a_planted_outlier():
    generator = torch.Generator().manual_seed(0)
    points = 0.01 * torch.randn(500, 256, generator=generator)
    points[317] += 5.0
    for seed in range(5):
        chosen = kcenter_greedy(points, 4, seed=seed)
        assert 317 in chosen.tolist()
        assert len(chosen) == 4 and torch.equal(chosen, chosen.sort().values)


def test_coreset_covers_better_than_a_random_subset():
    """k-center greedy takes the farthest points: its covering radius beats random subsets."""
    generator = torch.Generator().manual_seed(1)
    centres = 3.0 * torch.randn(12, 64, generator=generator)
    sizes = [300] + [5] * 11  # one dense cluster, eleven small far ones
    points = torch.cat([c + 0.1 * torch.randn(n, 64, generator=generator) for c, n in zip(centres, sizes)])

    def radius(index: torch.Tensor) -> float:
        return float(torch.cdist(points, points[index]).amin(dim=1).max())

    greedy = radius(kcenter_greedy(points, 12, seed=0, projection_dim=512))
    randoms = [radius(torch.randperm(len(points), generator=generator)[:12]) for _ in range(20)]
    assert greedy < 0.5 * min(randoms)
    assert greedy < 5.0  # one centre per cluster: every point within its cluster (clusters ~34 apart)


# ------------------------------------------------------------------------------------ search
def test_chunked_search_equals_unchunked_exactly():
    """Small dyadic values: every dot product is exact, so any blocking must give the same bits."""
    generator = torch.Generator().manual_seed(0)
    queries = torch.randint(-4, 5, (37, 8), generator=generator).float() / 8
    bank = torch.randint(-4, 5, (53, 8), generator=generator).float() / 8
    expected = (1.0 - (queries @ bank.T).amax(dim=1)).clamp(min=0)
    for chunk in (1, 5, 52, 53, 54, 37 * 53, 1 << 24, None):  # None: one block (exported graphs)
        assert torch.equal(nearest_distances(queries, bank, chunk_elements=chunk), expected), chunk


def test_chunked_search_on_real_features(tiny_model, bank):
    tokens = _stage_tokens(tiny_model, _images(2, seed=9))
    whole = reference_distances(tokens, GRIDS, bank, chunk_elements=1 << 30)
    tiny_chunks = reference_distances(tokens, GRIDS, bank, chunk_elements=100)  # smaller than the bank: it is split
    assert len(whole) == len(tiny_chunks) == 4
    for a, b in zip(whole, tiny_chunks, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    queries = aggregate_patches(tokens[1], GRIDS[1]).reshape(-1, bank.stages[1].shape[1])
    brute = 1.0 - F.cosine_similarity(queries[:, None], bank.stages[1][None], dim=-1).amax(dim=1)
    assert torch.allclose(whole[1].reshape(-1), brute.clamp(min=0), atol=1e-5)


def test_identical_query_has_zero_distance(tiny_model, bank):
    tokens = _stage_tokens(tiny_model, _images(3))  # the very images of the bank
    distances = reference_distances(tokens, GRIDS, bank)
    assert isinstance(distances, list) and len(distances) == 4
    assert all(d.shape == (3, GRID, GRID) and d.dtype == torch.float32 for d in distances)
    largest = max(float(d.max()) for d in distances)
    assert largest < 1e-6
    unseen = reference_distances(_stage_tokens(tiny_model, _images(1, seed=7)), GRIDS, bank)
    assert float(torch.stack(unseen).mean()) > 100 * (largest + 1e-9)


def test_planted_anomalous_patch_gets_the_largest_distance(tiny_model):
    references = _images(4, seed=2)
    normal_bank = build_reference_bank(tiny_model, references, "gear")
    rng = np.random.default_rng(3)
    query = references[1].copy()
    # 48 px image -> 224 px squashed: pixels 20..27 cover the patches around the grid centre
    query[20:28, 20:28] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    distances = reference_distances(_stage_tokens(tiny_model, [query]), GRIDS, normal_bank)[0][0]  # stage 1: local
    y, x = divmod(int(distances.argmax()), GRID)
    assert 5 <= y <= 10 and 5 <= x <= 10
    assert float(distances[0, 0]) < 0.1 * float(distances.max())


@pytest.mark.parametrize("height, width", [(5, 5), (4, 6)])
def test_aggregation_is_the_3x3_neighbourhood_mean(height, width):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, height * width, 6, generator=generator)  # an H x W grid, row by row
    got = aggregate_patches(tokens, (height, width))
    grid = tokens.view(2, height, width, 6)
    for b in range(2):
        for y in range(height):
            for x in range(width):
                window = grid[b, max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(-1, 6).mean(dim=0)
                assert torch.allclose(got[b, y * width + x], F.normalize(window, dim=0), atol=1e-6)
    with pytest.raises(ValueError, match="do not fill"):
        aggregate_patches(tokens, (height + 1, width))


def test_aggregation_spreads_a_change_to_its_neighbours_only(tiny_model, bank):
    """A query equal to a reference except one token: distances are non-zero on its 3 x 3 neighbourhood
    and zero elsewhere (without aggregation only the token itself would move)."""
    tokens = [t.clone() for t in _stage_tokens(tiny_model, _images(3))[:4]]
    tokens = [t[:1] for t in tokens]
    for t in tokens:
        t[0, 5 * GRID + 9] = 10.0 * torch.randn(t.shape[-1], generator=torch.Generator().manual_seed(4))
    distances = reference_distances(tokens, GRIDS, bank)[0][0]
    changed = distances > 1e-5
    expected = torch.zeros(GRID, GRID, dtype=torch.bool)
    expected[4:7, 8:11] = True
    assert torch.equal(changed, expected)


def test_search_rejects_mismatched_features(tiny_model, bank):
    tokens = _stage_tokens(tiny_model, _images(1))
    with pytest.raises(ValueError, match="stages of features"):
        reference_distances(tokens[:3], GRIDS[:3], bank)
    with pytest.raises(ValueError, match="do not match"):
        reference_distances([t[..., :16] for t in tokens], GRIDS, bank)
    with pytest.raises(ValueError, match="do not match"):  # the right tokens on another grid
        reference_distances(tokens, [(8, 32)] * 4, bank)
    with pytest.raises(ValueError, match="chunk_elements"):
        nearest_distances(torch.ones(2, 3), torch.ones(4, 3), chunk_elements=0)


# ------------------------------------------------------------------------------------ maps and fusion
def test_reference_maps_use_the_text_maps_upsampling(tiny_model):
    """The text logits and the reference maps share `AnomalyMapHead.upsample`."""
    head = tiny_model.map_head
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(1, GRID * GRID, 8, generator=generator) for _ in range(2)]
    text = F.normalize(torch.randn(1, 2, 2, 8, generator=generator), dim=-1)
    logits = head.logits(features, text, [(GRID, GRID)] * 2)
    for k, f in enumerate(features):
        grid = head.logit_scale * torch.einsum("nd,sd->sn", F.normalize(f[0], dim=-1), text[0, k])
        expected = AnomalyMapHead.upsample(grid.reshape(1, 2, GRID, GRID), head.image_size)
        assert torch.allclose(logits[0, k], expected[0], atol=1e-4)
    stacked = torch.rand(2, 4, GRID, GRID, generator=generator)
    distances = list(stacked.unbind(dim=1))  # K tensors B x H x W
    scale = torch.tensor([0.1, 0.2, 0.3, 0.4])
    maps = reference_maps(distances, scale, 224)
    up = AnomalyMapHead.upsample(stacked, 224)
    assert maps.shape == (2, 4, 224, 224)
    assert torch.allclose(maps, up / (up + scale.view(1, 4, 1, 1)))
    assert torch.allclose(maps[:, :, 0, 0], stacked[:, :, 0, 0] / (stacked[:, :, 0, 0] + scale))  # corners kept
    half = reference_maps([torch.full((1, GRID, GRID), float(s)) for s in scale], scale, 224)
    assert torch.allclose(half, torch.full_like(half, 0.5))  # a normal-scale distance maps to 0.5
    # stages on grids of their own (a CNN's strides): each is upsampled from its own grid
    mixed = [torch.rand(2, 28, 28, generator=generator), torch.rand(2, 7, 14, generator=generator)]
    maps = reference_maps(mixed, scale[:2], 224)
    assert maps.shape == (2, 2, 224, 224)
    for k, d in enumerate(mixed):
        up = AnomalyMapHead.upsample(d[:, None], 224)[:, 0]
        assert torch.allclose(maps[:, k], up / (up + scale[k]))
    with pytest.raises(ValueError, match="K tensors B x H_k x W_k"):
        reference_maps(mixed, scale, 224)  # one normal scale per stage is needed


def test_normal_scale_is_a_high_quantile_of_reference_distances(tiny_model):
    tokens = _stage_tokens(tiny_model, _images(4, seed=11))
    many = bank_from_features(tokens, GRIDS, class_name="gear", features="trunk", stage_blocks=(0, 1, 2, 3),
                              fingerprint="trunk:a:b", max_bank_patches=None)
    # leave one out, by hand: image 0's patches against images 1..3
    patches = aggregate_patches(tokens[0], GRIDS[0])
    by_hand = nearest_distances(patches[0], patches[1:].reshape(-1, patches.shape[-1]))
    assert 0.5 * float(by_hand.median()) < float(many.normal_scale[0]) <= 1.5 * float(by_hand.max())
    one = bank_from_features([t[:1] for t in tokens], GRIDS, class_name="gear", features="trunk",
                             stage_blocks=(0, 1, 2, 3), fingerprint="trunk:a:b", max_bank_patches=None)
    assert bool((one.normal_scale > 1e-3).all())  # one shot: the same image outside each 3 x 3 window


def test_fusion_weights():
    generator = torch.Generator().manual_seed(0)
    text = torch.rand(2, 4, 8, 8, generator=generator)
    reference = torch.rand(2, 4, 8, 8, generator=generator)
    assert torch.equal(fuse_stage_maps(text, reference, 0.0), text)
    assert torch.equal(fuse_stage_maps(text, reference, 1.0), reference)
    assert torch.allclose(fuse_stage_maps(text, reference, 0.25), 0.75 * text + 0.25 * reference)
    for weight in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="few-shot weight"):
            fuse_stage_maps(text, reference, weight)
    with pytest.raises(ValueError, match="differ"):
        fuse_stage_maps(text, reference[:, :3], 0.5)


def test_bank_moves_and_casts(bank):
    half = bank.to(dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.class_name == bank.class_name
    assert torch.allclose(half.stages[0].float(), bank.stages[0], atol=1e-2)
    assert bank.dtype == torch.float32  # the original is unchanged


# ------------------------------------------------------------------------------------ helpers for the integration
def test_draw_references_is_seeded_per_class_and_never_repeats():
    from siad.references import draw_references

    pool = [f"good/{i:03d}.png" for i in range(20)]
    first = draw_references(pool, 4, seed=0, class_name="gear")
    assert first == draw_references(list(pool), 4, seed=0, class_name="gear")  # the same draw every time
    assert len(set(first)) == 4 and first == sorted(first)  # distinct, in pool order
    others = {tuple(draw_references(pool, 4, seed=s, class_name=c)) for s in range(3) for c in ("gear", "wood")}
    assert len(others) == 6  # seeds and classes draw differently
    assert draw_references(pool, 20, seed=3, class_name="gear") == pool
    with pytest.raises(ValueError, match="only 20 normal images"):
        draw_references(pool, 21, seed=0, class_name="gear")
    with pytest.raises(ValueError, match="positive"):
        draw_references(pool, 0, seed=0, class_name="gear")


def test_bank_digest_follows_the_content(tiny_model, bank, tmp_path):
    from siad.references import shot_mode

    assert bank.digest() == bank.digest() and len(bank.digest()) == 64
    bank.save(tmp_path / "b")
    assert ReferenceBank.load(tmp_path / "b").digest() == bank.digest()  # the same content: the same key
    assert bank.to(dtype=torch.bfloat16).digest() != bank.digest()
    assert bank._replace(seed=5).digest() != bank.digest()
    other = build_reference_bank(tiny_model, _images(3, seed=1), "metal nut")
    assert other.digest() != bank.digest()
    edited = _fake_bank([torch.nn.functional.normalize(torch.randn(10, 8), dim=-1)])
    before = edited.digest()
    edited.stages[0].mul_(-1.0)  # an in-place change is seen
    assert edited.digest() != before
    assert (bank.mode, shot_mode(0), shot_mode(16)) == ("3-shot", "zero-shot", "16-shot")
