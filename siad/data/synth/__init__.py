"""SIAD-Synth: MVTec-format anomaly-detection data made here, with no download.

`python -m siad.data.synth --out DIR [--seed N]` writes, under DIR:

- `train/<class>/...`: the TRAINING classes (textures and objects), MVTec layout: `train/good` normals,
  plus a few `test/good`, `test/<defect>` and `ground_truth/<defect>/NNN_mask.png` for sanity checks;
- `test/<class>/...`: the unseen TEST classes (other textures, other part shapes), same layout, with
  every defect kind of `DEFECT_KINDS` in `test/<defect>`; the test defects are drawn here (scratches,
  cracks, holes, stains, colour shifts, missing pieces, warps, contamination), never by CutPaste;
- `medical/{yes,no}/NNN.png` and `medical_train/{yes,no}/NNN.png`: grayscale brain-like scans made from
  scikit-image's Shepp-Logan phantom, with lesion-like anomalies, image labels only (BrainMRI layout);
- `train/meta.json`, `test/meta.json` (the zero-shot repositories' index, DESIGN 4), `synth.json` (the
  summary: classes, split, seed, counts) and `README.md`.

Everything is a function of the seed: each image has its own random generator, seeded from the seed and
the image's path, so the same seed gives byte-identical files. The only inputs are scikit-image's
bundled photographs (brick, grass, gravel, phantom), read from the installed package: nothing is
downloaded.

The generators are public so that tests and other code can call them: `make_texture()`,
`make_object()` (an `ObjectScene`: image, foreground, background), `apply_defect()` (image and EXACT
mask: a pixel outside the mask is unchanged, and the mask is the changed pixels with at most their
enclosed gaps filled), `make_scan()`; `generate()` writes a whole set.

Generator families (`families`): many named, parametric generators of normal images, textures and
parts, in two disjoint registries, `TRAIN_FAMILIES` and `HELDOUT_FAMILIES` (neither holds a test class
above). `make_family_image(family, rng, size)` draws one; `python -m siad.data.synth families --out DIR`
writes training images of every training family, `python -m siad.data.synth heldout --out DIR` a test
set of the held-out families in the layout of the test split above (see `family_sets`).

The package, by what it draws: `common` (random generators, noise, colour, drawing helpers),
`textures`, `parts`, `defects`, `medical`, `writing` (the split, the plan of a set, meta.json,
synth.json, README) and `cli` (the command line); for the families, `appearance` (colour, materials,
lighting, backdrops, the camera finish), `texture_drawing` and `part_drawing` (the helpers of the
texture and part families), `family_textures` (stochastic surfaces), `family_patterns` (regular
patterns), `family_parts` (machine parts), `family_objects` (printed and everyday objects), `heldout`
(the held-out generators), `families` (the registries) and `family_sets` (writing their sets).
"""

from siad.data.synth.cli import main
from siad.data.synth.common import MAX_SIZE, MIN_SIZE, ObjectScene, SynthError, rng_for
from siad.data.synth.defects import CHANGE_TOLERANCE, DEFECT_KINDS, MIN_CONTRAST, apply_defect, exact_change
from siad.data.synth.families import (FITTING_FAMILIES, HELDOUT_FAMILIES, TRAIN_FAMILIES, VALIDATION_FAMILIES,
                                      Family, get_family, make_family_image, make_family_scene)
from siad.data.synth.family_sets import (generate_families, generate_heldout, generate_validation,
                                         make_family_anomalous, plan_families, plan_heldout)
from siad.data.synth.medical import MEDICAL_CLASS, make_scan
from siad.data.synth.parts import OBJECT_KINDS, make_object
from siad.data.synth.textures import PHOTO_TEXTURES, PROCEDURAL_TEXTURES, TEXTURE_KINDS, make_texture
from siad.data.synth.writing import (DEFAULTS, FORMAT_VERSION, SMALL, TEST_CLASSES, TRAIN_CLASSES, class_type,
                                     generate, make_anomalous, make_normal, plan, prepare_output)

__all__ = [
    "CHANGE_TOLERANCE", "DEFAULTS", "DEFECT_KINDS", "FORMAT_VERSION", "MAX_SIZE", "MEDICAL_CLASS", "MIN_CONTRAST",
    "MIN_SIZE", "OBJECT_KINDS", "PHOTO_TEXTURES", "PROCEDURAL_TEXTURES", "SMALL", "TEST_CLASSES", "TEXTURE_KINDS",
    "TRAIN_CLASSES", "ObjectScene", "SynthError", "apply_defect", "class_type", "exact_change", "generate", "main",
    "make_anomalous", "make_normal", "make_object", "make_scan", "make_texture", "plan", "prepare_output",
    "rng_for",
    # generator families
    "FITTING_FAMILIES", "Family", "HELDOUT_FAMILIES", "TRAIN_FAMILIES", "VALIDATION_FAMILIES", "generate_families",
    "generate_heldout", "generate_validation", "get_family",
    "make_family_anomalous", "make_family_image", "make_family_scene", "plan_families", "plan_heldout",
]
