"""SIAD-Synth generator families: registries and images."""

from __future__ import annotations

import inspect
import numpy as np
import pytest
from scipy import ndimage

from siad.data import synth
from siad.data.synth import family_parts, family_textures, heldout, parts, textures
from siad.data.synth.families import PART, TEXTURE

ALL = {**synth.TRAIN_FAMILIES, **synth.HELDOUT_FAMILIES}
SIZE = 64


# --------------------------------------------------------------------------------------------------
# Registries


def test_registries_are_large_disjoint_and_hold_no_test_class() -> None:
    train, held = synth.TRAIN_FAMILIES, synth.HELDOUT_FAMILIES
    assert len(train) >= 40 and len(held) >= 10
    assert not set(train) & set(held)
    # different in kind: no generator function is shared between the registries
    assert not {f.draw for f in train.values()} & {f.draw for f in held.values()}
    assert all(f.draw.__module__ == heldout.__name__ for f in held.values())
    assert all(f.draw.__module__ != heldout.__name__ for f in train.values())
    # both hold textures and parts
    for registry in (train, held):
        assert {f.kind for f in registry.values()} == {TEXTURE, PART}
        assert sum(f.kind == TEXTURE for f in registry.values()) >= 5
        assert sum(f.kind == PART for f in registry.values()) >= 5
    # no SIAD-Synth test class, by name or by a word of the name; no clash with SIAD-Synth's classes
    for name, family in ALL.items():
        assert family.name == name and name.isidentifier() and name == name.lower()
        assert name not in synth.TEST_CLASSES + synth.TRAIN_CLASSES
        assert not set(name.split("_")) & set(synth.TEST_CLASSES), name
        assert family.prompt_name == name.replace("_", " ") and family.about


def test_no_family_uses_a_test_class_generator() -> None:
    forbidden = {textures._fibrous, textures._wood, textures._perforated, parts._connector, parts._capsule,
                 parts._gear, parts._bracket}
    assert not forbidden & {f.draw for f in ALL.values()}
    sources = "\n".join(inspect.getsource(m) for m in (family_textures, family_parts, heldout))
    for name in ("_fibrous", "_wood", "_perforated", "_connector", "_capsule", "_gear", "_bracket", "gravel.png",
                 "_photo_texture", "make_texture", "make_object"):
        assert name not in sources, name


# --------------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_family_draws_valid_deterministic_varied_images(name: str) -> None:
    a = synth.make_family_image(name, synth.rng_for(0, f"{name}/a"), SIZE)
    again = synth.make_family_image(name, synth.rng_for(0, f"{name}/a"), SIZE)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, again)
    others = [synth.make_family_image(name, synth.rng_for(seed, f"{name}/a"), SIZE) for seed in (1, 2, 3)]
    for other in others:  # other seeds, other images
        assert np.abs(a.astype(int) - other.astype(int)).mean() > 3.0, name
    # within-family variety: the mean colours of the draws are not all alike, nor the images flat
    means = np.stack([im.reshape(-1, 3).mean(0) for im in [a] + others])
    assert np.ptp(means, axis=0).max() > 4.0, name
    assert all(im.astype(float).std() > 2.0 for im in [a] + others), name
    big = synth.make_family_image(name, synth.rng_for(0, f"{name}/big"), 100)
    assert big.shape == (100, 100, 3) and big.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(n for n, f in ALL.items() if f.kind == PART))
def test_part_scenes_have_a_foreground_and_the_scene_without_it(name: str) -> None:
    scene = synth.make_family_scene(name, synth.rng_for(5, name), 96)
    assert scene.foreground.dtype == bool and 0.01 < scene.foreground.mean() < 0.9, name
    differs = np.abs(scene.image.astype(int) - scene.background.astype(int)).max(axis=-1) > 0
    near_part = ndimage.binary_dilation(scene.foreground, iterations=2)
    # outside the part (but for a defocus or sub-pixel slivers: a few pixels) the scene is its background
    assert differs[scene.foreground].mean() > 0.5 and differs[~near_part].mean() < 0.003, name


def test_texture_scenes_cover_the_image() -> None:
    for name, family in ALL.items():
        if family.kind == TEXTURE:
            scene = synth.make_family_scene(name, synth.rng_for(0, name), SIZE)
            assert scene.foreground.all() and scene.background is scene.image


def test_bad_family_arguments_are_refused() -> None:
    rng = synth.rng_for(0, "x")
    with pytest.raises(ValueError):
        synth.make_family_image("gear", rng, SIZE)
    with pytest.raises(ValueError):
        synth.make_family_image("velvet", rng, SIZE)
    with pytest.raises(ValueError):
        synth.make_family_image("polka_dots", rng, 16)

