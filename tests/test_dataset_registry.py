"""The dataset registry (siad.data.registry): a new dataset is one module and one registry line, and
then load_dataset, DATASET_NAMES, `siad evaluate --dataset` (help, choices, a run), the class
descriptions of siad.prompts, the example class of its messages and the cross-dataset protocol all
know it. Also the built-in entries: the paper's datasets, descriptions and protocol."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siad.data
from siad import evaluate as ev
from siad import prompts
from siad.data import load_dataset
from siad.data.registry import dataset_spec, dataset_specs, register, unregister

# A toy dataset as a user would add it: one module with a reader and its spec. Layout:
# ROOT/<class>/normal/*.png and ROOT/<class>/anomalous/*.png (no masks), train = the normal images.
TOY_MODULE = '''
from pathlib import Path

from siad.data.sample import NORMAL_DEFECT, Sample, list_images
from siad.data.spec import DatasetSpec, ReadOptions

DESCRIPTIONS = {"gizmo": "This is a photo of a gizmo for anomaly detection, which should be shiny.",
                "widget": "This is a photo of a widget for anomaly detection, which should be square."}


def read_toy(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    classes = sorted(d for d in root.iterdir() if (d / "normal").is_dir())
    if not classes:
        raise FileNotFoundError(f"no {options.dataset} class under {root}: expected e.g. "
                                f"{root / options.example_class / 'normal'}")
    samples = []
    for folder in classes:
        samples += [Sample(p, None, folder.name, NORMAL_DEFECT, 0) for p in list_images(folder / "normal")]
        if split == "test":
            samples += [Sample(p, None, folder.name, "dent", 1) for p in list_images(folder / "anomalous")]
    return samples


SPEC = DatasetSpec(name="toy", title="Toy", read=read_toy, classes=tuple(DESCRIPTIONS), example_class="gizmo",
                   descriptions=DESCRIPTIONS, uzad_source="mvtec")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy module written to a folder on sys.path, imported and registered (the one registry line);
    unregistered afterwards."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "toy_dataset.py").write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("toy_dataset")
    assert "toy" not in siad.data.DATASET_NAMES
    register(module.SPEC)  # the registry line
    yield module
    unregister("toy")
    sys.modules.pop("toy_dataset", None)


def make_toy_root(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("gizmo", "widget"):
        for kind, count in (("normal", 3), ("anomalous", 2)):
            (root / name / kind).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / name / kind / f"{i}.png")
    return root


def test_a_registered_toy_dataset_is_read_described_and_named(toy, tmp_path):
    root = make_toy_root(tmp_path / "toy_data")
    assert siad.data.DATASET_NAMES[-1] == "toy" and dataset_spec("TOY") is toy.SPEC
    test = load_dataset("Toy", root, "test")
    assert [(s.class_name, s.label) for s in test] == [("gizmo", 0)] * 3 + [("gizmo", 1)] * 2 + \
        [("widget", 0)] * 3 + [("widget", 1)] * 2
    assert {s.label for s in load_dataset("toy", root, "train")} == {0}
    assert [s.class_name for s in load_dataset("toy", root, "test", classes=["widget"])] == ["widget"] * 5
    with pytest.raises(ValueError, match=r"class\(es\) \['bolt'\] not in the test split of toy"):
        load_dataset("toy", root, "test", classes=["bolt"])
    # its example class is what its reader's messages name
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected e\.g\. .*empty/gizmo/normal"):
        load_dataset("toy", tmp_path / "empty", "test")
    # the paper-style descriptions reach the prompts
    assert prompts.describe("gizmo", "toy") == toy.DESCRIPTIONS["gizmo"]
    assert prompts.describe("widget") == toy.DESCRIPTIONS["widget"]  # no table names widget but the toy's
    assert dict(prompts.CLASS_DESCRIPTIONS["toy"]) == toy.DESCRIPTIONS
    assert {"gizmo", "widget"} <= set(prompts.known_classes())
    # and the cross-dataset protocol: the MVTec checkpoint tests it
    assert ev.uzad_protocol()["toy"] == "mvtec"
    args = argparse.Namespace(protocol="uzad", models=["mvtec=M"], datasets=[f"toy={root}"], model=None, dataset=None,
                              root=None, classes=None)
    assert ev.plan_jobs(args) == [ev.Job("toy", root, "M")]


def test_siad_evaluate_offers_and_runs_the_toy_dataset(toy, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        ev.main(["--help"])
    assert done.value.code == 0
    assert "br35h, mvtec_format, meta, toy" in " ".join(capsys.readouterr().out.split())
    root = make_toy_root(tmp_path / "toy_data")
    out = tmp_path / "report"
    assert ev.main(["--model", "zero-shot:tiny", "--dataset", "toy", "--root", str(root), "--out", str(out),
                    "--quiet", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["dataset"] == "toy" and list(report["classes"]) == ["gizmo", "widget"]
    assert report["classes"]["gizmo"]["n_anomalous"] == 2 and report["classes"]["gizmo"]["has_masks"] is False
    assert report["mean"]["pass1"]["image_auroc"] is not None and report["mean"]["pass1"]["pixel_auroc"] is None


def test_an_unregistered_dataset_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        ev.main(["--model", "M", "--dataset", "toy", "--root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert done.value.code == 2 and "invalid choice: 'toy'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown dataset 'toy'; expected one of \('mvtec', 'visa'"):
        load_dataset("toy", tmp_path, "test")


def test_register_refuses_a_second_dataset_of_a_name_and_bad_specs(toy):
    with pytest.raises(ValueError, match="registered already"):
        register(toy.SPEC)
    assert register(toy.SPEC, replace=True) is toy.SPEC
    with pytest.raises(TypeError):
        register("toy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower-case"):
        type(toy.SPEC)(name="Toy", title="t", read=toy.read_toy)
    with pytest.raises(ValueError, match=r"descriptions of classes \['bolt'\]"):
        type(toy.SPEC)(name="toy2", title="t", read=toy.read_toy, classes=("gizmo",), descriptions={"bolt": "x"})


def test_the_builtin_datasets_are_the_papers():
    assert siad.data.DATASET_NAMES == ("mvtec", "visa", "mpdd", "btad", "dtd", "sdd", "brainmri", "headct", "br35h",
                                       "mvtec_format", "meta")
    counts = {spec.name: len(spec.descriptions) for spec in dataset_specs()}
    assert counts == {"mvtec": 15, "visa": 12, "mpdd": 6, "btad": 3, "dtd": 12, "sdd": 1, "brainmri": 1, "headct": 1,
                      "br35h": 1, "mvtec_format": 0, "meta": 0}
    for spec in dataset_specs():
        assert not spec.classes or spec.example_class in spec.classes, spec.name
    assert [s.name for s in dataset_specs() if s.generic] == ["mvtec_format", "meta"]
    assert [s.name for s in dataset_specs() if s.class_folders is not None] == ["mvtec", "mpdd", "btad", "dtd",
                                                                                  "mvtec_format"]
    assert dataset_spec("btad").example_class == "01" and dataset_spec("sdd").cache_folder == "sdd_tiles"
    assert prompts.describe("metal_nut", "mvtec").endswith("and shouldn't be fliped.")
    assert prompts.describe("brain", "headct") == prompts.describe("brain", "br35h")
    assert prompts.describe("sprocket") == prompts.GENERIC_DESCRIPTION.format(name="sprocket")


def test_class_folders_of_an_mvtec_layout_root(tmp_path):
    for name in ("bottle", "cable"):
        (tmp_path / "mvtec" / name / "train").mkdir(parents=True)
    (tmp_path / "mvtec" / "license_notes").mkdir()
    assert siad.data.class_folders("mvtec", tmp_path / "mvtec") == ["bottle", "cable"]
    assert siad.data.class_folders("mvtec_format", tmp_path / "mvtec" / "bottle") == ["bottle"]
    assert siad.data.class_folders("visa", tmp_path / "mvtec") == []  # read from its CSV: unknown before reading
    assert siad.data.class_folders("mvtec", tmp_path / "nowhere") == []
