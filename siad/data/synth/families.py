"""Generator families: named, parametric generators of normal images, so that a model learns "a local
break of the image's own regularity" rather than a handful of classes.

Two disjoint registries:

- `TRAIN_FAMILIES`: procedural textures (stochastic and regular) and parts composed from parametric
  primitives, for training (normal images only; pseudo-anomalies are made at training time);
- `HELDOUT_FAMILIES`: families whose generators no training family uses (`siad.data.synth.heldout`),
  for a second set of unseen test classes with drawn defects.

`VALIDATION_FAMILIES` are six of `TRAIN_FAMILIES` (three textures, three parts) kept out of the training
images (`FITTING_FAMILIES` are the others): a validation set with drawn defects for choosing a training
recipe, so that neither test set (SIAD-Synth's test classes, the held-out families) is used to choose.

Neither holds SIAD-Synth's test classes (gravel, fibrous, wood, perforated, connector, capsule, gear,
bracket) or their generators. A family's name is its class name: readable words joined by underscores
(the prompts read them as spaces, see `siad.prompts.prompt_class_name`).

`make_family_image(family, rng, size)` draws one normal image (H x W x 3 uint8); `make_family_scene`
also gives the part's foreground and the scene without it (what defects need).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Union

import numpy as np

from siad.data.synth import family_objects as objects
from siad.data.synth import family_parts as parts
from siad.data.synth import family_patterns as patterns
from siad.data.synth import family_textures as textures
from siad.data.synth import heldout
from siad.data.synth.appearance import finish
from siad.data.synth.common import ObjectScene, _check_size

TEXTURE = "texture"
PART = "part"


@dataclass(frozen=True)
class Family:
    """A named generator of normal images. name: the class name (folder name, prompt name with spaces);
    kind: "texture" or "part"; draw: `(rng, size)` -> H x W x 3 float before the camera finish (a
    texture) or an `ObjectScene` (a part); about: one line on what it draws."""

    name: str
    kind: str
    draw: Callable[[np.random.Generator, int], Union[np.ndarray, ObjectScene]]
    about: str

    @property
    def prompt_name(self) -> str:
        return " ".join(self.name.split("_"))


def _registry(entries: list[tuple[str, str, Callable, str]]) -> Mapping[str, Family]:
    table = {name: Family(name, kind, draw, about) for name, kind, draw, about in entries}
    if len(table) != len(entries):
        raise AssertionError("duplicate family name")
    return MappingProxyType(table)


T, P = TEXTURE, PART
t, pat, p, o, h = textures, patterns, parts, objects, heldout

TRAIN_FAMILIES: Mapping[str, Family] = _registry([
    # stochastic surfaces
    ("concrete_wall", T, t.concrete_wall, "fractal noise with pits, lit as relief"),
    ("granite_slab", T, t.granite_slab, "mineral grains of three or four colours"),
    ("terrazzo_floor", T, t.terrazzo_floor, "polygonal stone chips in a matrix"),
    ("cork_board", T, t.cork_board, "small cellular granules with pores"),
    ("rusted_metal", T, t.rusted_metal, "brushed steel with fractal rust patches and pits"),
    ("camouflage_fabric", T, t.camouflage_fabric, "quantised warped noise in three or four colours, woven"),
    ("foam_sponge", T, t.foam_sponge, "cellular pores in foam, lit as relief"),
    ("crackle_glaze", T, t.crackle_glaze, "glaze with two scales of fine cellular cracks"),
    ("dried_mud", T, t.dried_mud, "large cells with wide cracks and curled edges"),
    ("speckled_paint", T, t.speckled_paint, "paint spatter of several colours and sizes"),
    ("sandpaper", T, t.sandpaper, "fine abrasive grains with glints"),
    ("brushed_metal", T, t.brushed_metal, "directional streaks with a sheen band"),
    ("lichen_rock", T, t.lichen_rock, "rock with fractal lichen patches"),
    ("water_ripples", T, t.water_ripples, "interfering circular waves, lit"),
    ("sand_ripples", T, t.sand_ripples, "asymmetric wind ripples, warped, lit"),
    ("stucco_plaster", T, t.stucco_plaster, "ridged fractal relief"),
    ("recycled_paper", T, t.recycled_paper, "low-contrast paper with coloured flecks"),
    # regular patterns
    ("striped_fabric", T, pat.striped_fabric, "a repeated sequence of stripes, woven"),
    ("tartan_plaid", T, pat.tartan_plaid, "crossing stripe setts in a twill"),
    ("ceramic_tiles", T, pat.ceramic_tiles, "square tiles (checks, mosaic or plain) with grout and bevels"),
    ("brick_pavement", T, pat.brick_pavement, "running or stacked bond bricks with mortar"),
    ("hexagon_tiles", T, pat.hexagon_tiles, "a hexagonal tiling with grout"),
    ("herringbone_tiles", T, pat.herringbone_tiles, "planks in a herringbone"),
    ("polka_dots", T, pat.polka_dots, "dots on a square or hexagonal lattice"),
    ("knit_fabric", T, pat.knit_fabric, "rows of V-shaped knit stitches"),
    ("twill_weave", T, pat.twill_weave, "a denim-like twill of warp and weft"),
    ("basket_weave", T, pat.basket_weave, "blocks of strands alternating direction"),
    ("diamond_mesh", T, pat.diamond_mesh, "chain-link wire mesh over a blurred ground"),
    ("corrugated_sheet", T, pat.corrugated_sheet, "sinusoidal or trapezoidal corrugation, lit"),
    ("corduroy_fabric", T, pat.corduroy_fabric, "fine ribs with pile"),
    ("wave_print", T, pat.wave_print, "wavy or zigzag stripes"),
    ("turned_metal_face", T, pat.turned_metal_face, "fine concentric grooves with a radial sheen"),
    ("fish_scales", T, pat.fish_scales, "overlapping scales in offset rows"),
    ("tread_plate", T, pat.tread_plate, "raised bars alternating orientation"),
    ("circuit_board", T, pat.circuit_board, "traces, pads and footprints on solder mask"),
    # parts
    ("polygon_nut", P, p.polygon_nut, "a 4- to 8-sided nut with a bore"),
    ("o_ring", P, p.o_ring, "a rubber torus"),
    ("mounting_plate", P, p.mounting_plate, "a rectangular plate with holes and slots"),
    ("pipe_flange", P, p.pipe_flange, "a flange with a raised face and a bolt circle"),
    ("dowel_pin", P, p.dowel_pin, "a chamfered cylindrical pin"),
    ("hex_bolt", P, p.hex_bolt, "a hexagon-head bolt from the side, partly threaded"),
    ("coil_spring", P, p.coil_spring, "a helical spring from the side"),
    ("star_knob", P, p.star_knob, "a lobed knob with a metal insert"),
    ("printed_label", P, o.printed_label, "a paper label with text, barcode and logo"),
    ("resistor", P, o.resistor, "a banded resistor with leads"),
    ("keycap", P, o.keycap, "a keyboard key with a legend"),
    ("coin", P, o.coin, "a coin with a rim, a number and dots"),
    ("door_key", P, o.door_key, "a key: bow, blade and random bitting"),
    ("paper_clip", P, o.paper_clip, "a wire paper clip"),
    ("blister_pack", P, o.blister_pack, "a foil blister of tablets in a grid"),
    ("ball_bearing", P, p.ball_bearing, "races and balls, or a sealed bearing"),
    ("wing_nut", P, p.wing_nut, "a boss with two wings"),
    ("extrusion_profile", P, p.extrusion_profile, "a T-slot aluminium profile cut face"),
    ("cable_cross_section", P, o.cable_cross_section, "a sheathed cable cut: insulated stranded cores"),
    ("dice_cube", P, o.dice_cube, "a die showing one face"),
    ("nameplate", P, o.nameplate, "a metal plate with engraved text and screws"),
    ("rivet_strip", P, p.rivet_strip, "a strip with one or two rows of rivets"),
    ("parts_tray", P, p.parts_tray, "a regular layout of identical small parts"),
])

HELDOUT_FAMILIES: Mapping[str, Family] = _registry([
    ("labyrinth_coral", T, h.labyrinth_coral, "band-passed noise: a Turing-like labyrinth"),
    ("truchet_tiles", T, h.truchet_tiles, "quarter-circle Truchet tiles"),
    ("guilloche_print", T, h.guilloche_print, "interlaced wavy rosette line work"),
    ("meander_print", T, h.meander_print, "Greek key bands from a bitmap tile"),
    ("quilted_fabric", T, h.quilted_fabric, "puffed cloth between stitched seams"),
    ("rosette_spots", T, h.rosette_spots, "broken rings around cellular seeds"),
    ("rain_droplets", T, h.rain_droplets, "refracting water drops on a surface"),
    ("pipe_tee", P, h.pipe_tee, "a three-armed pipe fitting with collars"),
    ("padlock", P, h.padlock, "a padlock body with keyhole and shackle"),
    ("thread_spool", P, h.thread_spool, "a spool of thread from the side"),
    ("circlip", P, h.circlip, "an open tapered retaining ring with lugs"),
    ("turned_spindle", P, h.turned_spindle, "a lathe-turned profile shaded as a solid of revolution"),
    ("sim_card", P, h.sim_card, "a card with a clipped corner, a contact pad and print"),
    ("utility_blade", P, h.utility_blade, "a trapezoid blade with notches and a ground edge"),
])


VALIDATION_FAMILIES: Mapping[str, Family] = MappingProxyType({name: TRAIN_FAMILIES[name] for name in (
    "terrazzo_floor", "herringbone_tiles", "knit_fabric", "ball_bearing", "door_key", "printed_label")})
FITTING_FAMILIES: Mapping[str, Family] = MappingProxyType(
    {name: family for name, family in TRAIN_FAMILIES.items() if name not in VALIDATION_FAMILIES})


def get_family(family: Union[str, Family]) -> Family:
    """A family by name (from either registry), or the family itself."""
    if isinstance(family, Family):
        return family
    if family in TRAIN_FAMILIES:
        return TRAIN_FAMILIES[family]
    if family in HELDOUT_FAMILIES:
        return HELDOUT_FAMILIES[family]
    raise ValueError(f"unknown family {family!r}; expected one of TRAIN_FAMILIES or HELDOUT_FAMILIES")


def make_family_scene(family: Union[str, Family], rng: np.random.Generator, size: int = 256) -> ObjectScene:
    """A normal image of a family as an `ObjectScene` (for a texture, the foreground is the whole image
    and the background the image itself)."""
    spec = get_family(family)
    size = _check_size(size)
    drawn = spec.draw(rng, size)
    if isinstance(drawn, ObjectScene):
        return drawn
    image, _ = finish(rng, np.asarray(drawn, np.float32))
    return ObjectScene(image=image, foreground=np.ones((size, size), bool), background=image)


def make_family_image(family: Union[str, Family], rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A normal image of a family: size x size x 3 uint8."""
    return make_family_scene(family, rng, size).image
