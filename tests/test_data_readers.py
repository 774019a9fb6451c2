"""Dataset readers, masks, meta.json and the `prepare` command, on trees built in the native layouts."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siad.data import DATASET_NAMES, Sample, load_dataset, load_mask, read_meta, write_meta
from siad.data.__main__ import main as cli_main
from siad.data.meta import read_meta_splits


# ----------------------------------------------------------------------------- tree builders
def save_image(path: Path, size: tuple[int, int] = (12, 16), value: int = 100, gray: bool = False) -> Path:
    """A small image (height, width) at `path`; the format follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = size if gray else (*size, 3)
    pixels = np.clip(rng.normal(value, 20, shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def save_mask(path: Path, size: tuple[int, int] = (12, 16), box: tuple[int, int, int, int] = (2, 2, 6, 6),
              value: int = 255) -> Path:
    """A mask with `value` inside box (top, left, bottom, right) and 0 elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size, np.uint8)
    top, left, bottom, right = box
    pixels[top:bottom, left:right] = value
    Image.fromarray(pixels).save(path)
    return path


def build_mvtec(root: Path, class_name: str = "bottle", defect: str = "broken_large") -> Path:
    """MVTec AD / MPDD / DTD-Synthetic layout; the masks' sort order differs from the images'."""
    cls = root / class_name
    save_image(cls / "train" / "good" / "000.png", value=10)
    save_image(cls / "train" / "good" / "001.png", value=20)
    save_image(cls / "test" / "good" / "000.png", value=30)
    # "a.png" < "a1.png" but "a1_mask.png" < "a_mask.png": pairing by sort order would swap them.
    save_image(cls / "test" / defect / "a.png", value=40)
    save_image(cls / "test" / defect / "a1.png", value=50)
    save_mask(cls / "ground_truth" / defect / "a_mask.png", box=(0, 0, 3, 3))
    save_mask(cls / "ground_truth" / defect / "a1_mask.png", box=(9, 12, 12, 16))
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")
    return root


def test_dataset_names() -> None:
    assert set(DATASET_NAMES) == {"mvtec", "visa", "mpdd", "btad", "dtd", "sdd", "brainmri", "headct",
                                  "br35h", "mvtec_format", "meta"}


# ----------------------------------------------------------------------------- MVTec-like
@pytest.mark.parametrize("name,class_name,defect", [
    ("mvtec", "bottle", "broken_large"), ("mpdd", "bracket_black", "hole"), ("dtd", "Woven_001", "bad"),
    ("mvtec_format", "anything", "scratch"),
])
def test_mvtec_like_reader(tmp_path: Path, name: str, class_name: str, defect: str) -> None:
    root = build_mvtec(tmp_path / "data", class_name, defect)
    train = load_dataset(name, root, "train")
    assert [s.image_path.name for s in train] == ["000.png", "001.png"]
    assert all(s.label == 0 and s.mask_path is None and s.defect_type == "good" and s.class_name == class_name
               for s in train)
    test = load_dataset(name, root, "test")
    by_name = {(s.defect_type, s.image_path.name): s for s in test}
    assert by_name[("good", "000.png")].mask_path is None and by_name[("good", "000.png")].label == 0
    a, a1 = by_name[(defect, "a.png")], by_name[(defect, "a1.png")]
    assert a.label == a1.label == 1
    assert a.mask_path.name == "a_mask.png" and a1.mask_path.name == "a1_mask.png"
    assert load_mask(a.mask_path)[0, 0] and not load_mask(a.mask_path)[11, 15]
    assert load_mask(a1.mask_path)[11, 15] and not load_mask(a1.mask_path)[0, 0]


def test_mvtec_missing_mask_names_it(tmp_path: Path) -> None:
    root = build_mvtec(tmp_path / "mvtec")
    (root / "bottle" / "ground_truth" / "broken_large" / "a1_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a1\.png.*a1_mask\.png"):
        load_dataset("mvtec", root, "test")
    assert len(load_dataset("mvtec", root, "train")) == 2  # the train split has no masks


def test_mvtec_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mvtec", tmp_path / "nowhere", "test")
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"bottle/train/good"):
        load_dataset("mvtec", tmp_path / "empty", "train")
    root = build_mvtec(tmp_path / "mvtec")
    (root / "bottle" / "train" / "good" / "000.png").unlink()
    (root / "bottle" / "train" / "good" / "001.png").unlink()
    (root / "bottle" / "train" / "good").rmdir()
    with pytest.raises(FileNotFoundError, match=r"bottle/train/good"):
        load_dataset("mvtec", root, "train")


def test_unknown_name_split_and_class_filter(tmp_path: Path) -> None:
    root = build_mvtec(tmp_path / "mvtec")
    build_mvtec(root, "cable", "bent_wire")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("kitti", root, "test")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mvtec", root, "val")
    assert {s.class_name for s in load_dataset("mvtec", root, "test")} == {"bottle", "cable"}
    assert {s.class_name for s in load_dataset("mvtec", root, "test", classes=["cable"])} == {"cable"}
    with pytest.raises(ValueError, match="zipper"):
        load_dataset("mvtec", root, "test", classes=["zipper"])


def test_mvtec_format_single_class_folder(tmp_path: Path) -> None:
    root = build_mvtec(tmp_path / "synth", "widget")
    samples = load_dataset("mvtec_format", root / "widget", "test")
    assert {s.class_name for s in samples} == {"widget"} and len(samples) == 3
    # a folder of MVTec-format sets (SIAD-Synth's top folder: train/<class>, test/<class>) is not a class
    top = tmp_path / "top"
    build_mvtec(top / "train", "widget")
    with pytest.raises(FileNotFoundError, match=r"top/<class>/train/good"):
        load_dataset("mvtec_format", top, "train")
    assert len(load_dataset("mvtec_format", top / "train", "train")) == 2


def test_btad_reader(tmp_path: Path) -> None:
    root = tmp_path / "BTech_Dataset_transformed"
    for cls, image_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".png"), ("03", ".bmp", ".bmp")):
        save_image(root / cls / "train" / "ok" / f"0000{image_ext}")
        save_image(root / cls / "test" / "ok" / f"0000{image_ext}")
        save_image(root / cls / "test" / "ko" / f"0001{image_ext}")
        save_image(root / cls / "test" / "ko" / f"0002{image_ext}")
        save_mask(root / cls / "ground_truth" / "ko" / f"0001{mask_ext}", box=(0, 0, 2, 2))
        save_mask(root / cls / "ground_truth" / "ko" / f"0002{mask_ext}", box=(5, 5, 8, 8))
    train = load_dataset("btad", root, "train")
    assert [s.class_name for s in train] == ["01", "02", "03"]
    assert all(s.label == 0 and s.defect_type == "good" and s.mask_path is None for s in train)
    test = load_dataset("btad", root, "test")
    assert len(test) == 9
    for s in test:
        if s.label:
            assert s.defect_type == "ko" and s.mask_path.stem == s.image_path.stem
        else:
            assert s.defect_type == "good" and s.mask_path is None
    (root / "03" / "ground_truth" / "ko" / "0002.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"03/test/ko/0002\.bmp"):
        load_dataset("btad", root, "test")


# ----------------------------------------------------------------------------- VisA
def build_visa(root: Path) -> Path:
    rows = ["object,split,label,image,mask"]
    for cls in ("candle", "pcb1"):
        images = root / cls / "Data" / "Images"
        for i in range(2):
            save_image(images / "Normal" / f"{i:04d}.JPG")
            rows.append(f"{cls},train,normal,{cls}/Data/Images/Normal/{i:04d}.JPG,")
        save_image(images / "Normal" / "0002.JPG")
        rows.append(f"{cls},test,normal,{cls}/Data/Images/Normal/0002.JPG,")
        for i in range(2):
            save_image(images / "Anomaly" / f"{i:03d}.JPG")
            save_mask(root / cls / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png", box=(1, 1, 4, 4), value=1 + i)
            rows.append(f"{cls},test,anomaly,{cls}/Data/Images/Anomaly/{i:03d}.JPG,"
                        f"{cls}/Data/Masks/Anomaly/{i:03d}.png")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa_reader_and_mask_binarisation(tmp_path: Path) -> None:
    root = build_visa(tmp_path / "VisA_20220922")
    train = load_dataset("visa", root, "train")
    assert len(train) == 4 and all(s.label == 0 and s.mask_path is None for s in train)
    test = load_dataset("visa", root, "test")
    assert len(test) == 6
    anomalies = [s for s in test if s.label == 1]
    assert len(anomalies) == 4 and all(s.defect_type == "anomaly" for s in anomalies)
    for s in anomalies:
        assert s.mask_path.stem == s.image_path.stem
        raw = np.asarray(Image.open(s.mask_path))
        assert raw.max() in (1, 2)  # small non-zero values, as VisA's masks hold
        mask = load_mask(s.mask_path)
        assert mask.dtype == bool and mask.sum() == 9 and mask[1:4, 1:4].all()


def test_visa_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"split_csv/1cls\.csv"):
        load_dataset("visa", tmp_path, "test")
    root = build_visa(tmp_path / "visa")
    (root / "pcb1" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"pcb1/Data/Masks/Anomaly/001\.png"):
        load_dataset("visa", root, "test")


def test_visa_empty_mask_column_pairs_by_stem(tmp_path: Path) -> None:
    root = build_visa(tmp_path / "visa")
    csv_path = root / "split_csv" / "1cls.csv"
    csv_path.write_text(csv_path.read_text().replace(",candle/Data/Masks/Anomaly/001.png", ","))
    sample = [s for s in load_dataset("visa", root, "test") if s.image_path.name == "001.JPG"
              and s.class_name == "candle"][0]
    assert sample.mask_path == root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png"


# ----------------------------------------------------------------------------- medical
def test_brainmri_reader(tmp_path: Path) -> None:
    root = tmp_path / "brain_mri"
    save_image(root / "yes" / "Y1.jpg")
    save_image(root / "yes" / "Y2.JPG")
    save_image(root / "no" / "1 no.jpeg")
    save_image(root / "no" / "No12.jpg")
    save_image(root / "no" / "N5.png")
    train = load_dataset("brainmri", root, "train")
    assert len(train) == 3 and all(s.label == 0 and s.class_name == "brain" for s in train)
    test = load_dataset("brainmri", root, "test")
    assert sorted(s.label for s in test) == [0, 0, 0, 1, 1]
    assert all(s.mask_path is None for s in test)
    missing = tmp_path / "missing"
    (missing / "yes").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"missing/no"):
        load_dataset("brainmri", missing, "test")


def test_br35h_ignores_pred(tmp_path: Path) -> None:
    root = tmp_path / "br35h"
    save_image(root / "yes" / "y0.jpg")
    save_image(root / "no" / "no0.jpg")
    save_image(root / "no" / "no1.jpg")
    for i in range(3):
        save_image(root / "pred" / f"pred{i}.jpg")
    test = load_dataset("br35h", root, "test")
    assert len(test) == 3 and all("pred" not in s.image_path.parts for s in test)
    assert [s.image_path.name for s in load_dataset("br35h", root, "train")] == ["no0.jpg", "no1.jpg"]


@pytest.mark.parametrize("nested", [False, True])
def test_headct_reader(tmp_path: Path, nested: bool) -> None:
    root = tmp_path / "headct"
    images = root / "head_ct" / "head_ct" if nested else root / "head_ct"
    labels = [0, 1, 0, 1, 1]
    for i in range(len(labels)):
        save_image(images / f"{i:03d}.png", gray=True)
    (root / "labels.csv").write_text("id, hemorrhage\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    test = load_dataset("headct", root, "test")
    assert sorted((s.image_path.name, s.label) for s in test) == [(f"{i:03d}.png", v) for i, v in enumerate(labels)]
    assert all(s.mask_path is None and s.class_name == "brain" for s in test)
    assert {s.defect_type for s in test if s.label} == {"hemorrhage"}
    train = load_dataset("headct", root, "train")
    assert sorted(s.image_path.name for s in train) == ["000.png", "002.png"]
    (images / "003.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"003\.png"):
        load_dataset("headct", root, "test")


def test_headct_missing_labels(tmp_path: Path) -> None:
    save_image(tmp_path / "head_ct" / "000.png")
    with pytest.raises(FileNotFoundError, match=r"labels\.csv"):
        load_dataset("headct", tmp_path, "test")


# ----------------------------------------------------------------------------- SDD
def build_raw_sdd(root: Path) -> Path:
    """Two KolektorSDD folders of 30 x 10 grey parts; kos01/Part0 has a defect in rows 12-17."""
    for kos in ("kos01", "kos02"):
        for part in range(2):
            save_image(root / kos / f"Part{part}.jpg", size=(30, 10), gray=True, value=60 + part)
            box = (12, 2, 18, 6) if (kos, part) == ("kos01", 0) else (0, 0, 0, 0)
            mask = root / kos / f"Part{part}_label.bmp"
            save_mask(mask, size=(30, 10), box=box)
    return root


def test_sdd_raw_tiling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    root = build_raw_sdd(tmp_path / "KolektorSDD")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="cache_dir"):
        load_dataset("sdd", root, "test")
    test = load_dataset("sdd", root, "test", cache_dir=cache)
    assert len(test) == 4 * 3 and {s.class_name for s in test} == {"SDD"}
    anomalies = [s for s in test if s.label == 1]
    assert [s.image_path.name for s in anomalies] == ["kos01_Part0_1.png"]
    tile = anomalies[0]
    source = np.asarray(Image.open(root / "kos01" / "Part0.jpg"))
    assert np.array_equal(np.asarray(Image.open(tile.image_path)), source[10:20])
    assert np.array_equal(load_mask(tile.mask_path), load_mask(root / "kos01" / "Part0_label.bmp")[10:20])
    assert all(s.mask_path is None for s in test if s.label == 0)
    assert all(cache in s.image_path.parents for s in test)
    train = load_dataset("sdd", root, "train", cache_dir=cache)
    assert len(train) == 11 and all(s.label == 0 for s in train)
    # the tiles are reused while the sources are unchanged
    stamp = tile.image_path.stat().st_mtime_ns
    load_dataset("sdd", root, "test", cache_dir=cache)
    assert tile.image_path.stat().st_mtime_ns == stamp
    assert list(workdir.iterdir()) == []  # nothing written into the working directory


def test_sdd_raw_missing_label(tmp_path: Path) -> None:
    root = build_raw_sdd(tmp_path / "KolektorSDD")
    (root / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"kos02/Part1_label\.bmp"):
        load_dataset("sdd", root, "test", cache_dir=tmp_path / "cache")


def test_sdd_pretiled_read_as_is(tmp_path: Path) -> None:
    root = tmp_path / "SDD_tiled"
    cls = root / "SDD"
    save_image(cls / "test" / "good" / "kos01_Part1_0.png")
    save_image(cls / "test" / "good" / "kos01_Part1_1.png")
    save_image(cls / "test" / "defect" / "kos01_Part0_1.png")
    save_mask(cls / "ground_truth" / "defect" / "kos01_Part0_1_mask.png")
    test = load_dataset("sdd", root, "test")
    assert [(s.image_path.name, s.label) for s in test] == [
        ("kos01_Part0_1.png", 1), ("kos01_Part1_0.png", 0), ("kos01_Part1_1.png", 0)]
    assert test[0].mask_path.name == "kos01_Part0_1_mask.png"
    assert len(load_dataset("sdd", root, "train")) == 2
    assert len(load_dataset("sdd", cls, "test")) == 3  # the class folder itself


# ----------------------------------------------------------------------------- load_mask
def test_load_mask_formats_and_resize(tmp_path: Path) -> None:
    small = save_mask(tmp_path / "small.png", value=1)
    assert load_mask(small).sum() == 16
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[0, 0, 2] = 5
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert load_mask(tmp_path / "rgb.png").sum() == 1
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert load_mask(tmp_path / "palette.png").tolist() == [[False, True], [True, False]]
    resized = load_mask(small, size=24)
    assert resized.shape == (24, 24) and resized.dtype == bool and resized.any()
    assert load_mask(small, size=(6, 8)).shape == (6, 8)
    assert load_mask(small, size=8, mode="center_crop").shape == (8, 8)
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        load_mask(tmp_path / "nothing.png")


# ----------------------------------------------------------------------------- meta.json
def test_meta_round_trip(tmp_path: Path) -> None:
    root = build_mvtec(tmp_path / "mvtec")
    build_mvtec(root, "cable", "bent_wire")
    splits = {split: load_dataset("mvtec", root, split) for split in ("train", "test")}
    path = write_meta(root, splits)
    assert path == root / "meta.json"
    assert read_meta_splits(root) == splits
    assert read_meta(root, "test") == splits["test"]
    assert load_dataset("meta", root, "train") == splits["train"]
    import json
    data = json.loads(path.read_text())
    entry = data["test"]["bottle"][-1]
    assert set(entry) == {"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}
    assert not Path(entry["img_path"]).is_absolute() and entry["img_path"].startswith("bottle/test/")
    normal = [e for e in data["test"]["bottle"] if e["anomaly"] == 0][0]
    assert normal["mask_path"] == "" and normal["specie_name"] == "good"


def test_meta_medical_and_errors(tmp_path: Path) -> None:
    root = tmp_path / "br35h"
    save_image(root / "yes" / "y0.jpg")
    save_image(root / "no" / "no0.jpg")
    samples = load_dataset("br35h", root, "test")
    write_meta(root, {"test": samples})
    assert read_meta(root, "test") == samples
    with pytest.raises(ValueError, match="no split 'train'"):
        read_meta(root, "train")
    with pytest.raises(FileNotFoundError, match=r"elsewhere/meta\.json"):
        read_meta(tmp_path / "elsewhere", "test")
    outside = Sample(tmp_path / "x.png", None, "brain", "good", 0)
    with pytest.raises(ValueError, match="not inside"):
        write_meta(root, {"test": [outside]})
    mvtec = build_mvtec(tmp_path / "mvtec")
    write_meta(mvtec, {"test": load_dataset("mvtec", mvtec, "test")})
    (mvtec / "bottle" / "ground_truth" / "broken_large" / "a_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"a_mask\.png"):
        read_meta(mvtec, "test")


# ----------------------------------------------------------------------------- CLI
def test_prepare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_mvtec(tmp_path / "mvtec")
    assert cli_main(["prepare", "mvtec", str(root)]) == 0
    out = capsys.readouterr().out
    assert "bottle" in out and "train" in out and "test" in out
    assert read_meta(root, "test") == load_dataset("mvtec", root, "test")


def test_prepare_cli_sdd_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_raw_sdd(tmp_path / "KolektorSDD")
    assert cli_main(["prepare", "sdd", str(root)]) == 0
    test = read_meta(root, "test")
    assert len(test) == 12 and all((root / "sdd_tiles") in s.image_path.parents for s in test)
    assert cli_main(["prepare", "sdd", str(root), "--cache-dir", str(tmp_path / "outside")]) == 1
    assert "must lie inside" in capsys.readouterr().err


def test_prepare_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["prepare", "mvtec", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err
    root = build_mvtec(tmp_path / "mvtec")
    (root / "meta.json").mkdir()  # meta.json cannot be written
    assert cli_main(["prepare", "mvtec", str(root)]) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_prepare_cli_read_only_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_mvtec(tmp_path / "mvtec")
    root.chmod(0o555)
    try:
        assert cli_main(["prepare", "mvtec", str(root)]) == 1
        assert "not writable" in capsys.readouterr().err
    finally:
        root.chmod(0o755)


def test_import_is_light() -> None:
    """`import siad.data` imports neither torch nor OpenCV (submodules load on first use)."""
    import subprocess
    import sys

    code = "import sys, siad.data; print('torch' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


def test_group_by_class_keeps_the_order_of_classes_and_samples():
    from siad.data import Sample, group_by_class

    samples = [Sample(Path(f"{c}{i}.png"), None, c, "good", 0) for i, c in enumerate("abab")]
    groups = group_by_class(samples)
    assert list(groups) == ["a", "b"]
    assert [s.image_path.name for s in groups["a"]] == ["a0.png", "a2.png"]
    assert group_by_class([]) == {}


# ----------------------------------------------------------------------------- mask sizes
def test_a_mask_of_another_size_than_its_image_is_reported_by_name(tmp_path: Path) -> None:
    """Such a mask used to be stretched to the map without a word."""
    import warnings

    from siad.data.masks import MaskSizeWarning

    root = build_mvtec(tmp_path / "mvtec")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching masks: no warning at all
        load_dataset("mvtec", root, "test")
    masks = root / "bottle" / "ground_truth" / "broken_large"
    save_mask(masks / "a_mask.png", size=(24, 32))  # twice the image's size, same aspect ratio
    save_mask(masks / "a1_mask.png", size=(12, 12))  # another aspect ratio
    with pytest.warns(MaskSizeWarning) as caught:
        samples = load_dataset("mvtec", root, "test")
    assert len(caught) == 1 and len(samples) == 3
    message = str(caught[0].message)
    assert message.startswith("2 mask(s) differ in size from their image")
    image = root / "bottle" / "test" / "broken_large"
    assert f"the mask {masks / 'a_mask.png'} is 32x24 but its image {image / 'a.png'} is 16x12;" in message
    assert f"the mask {masks / 'a1_mask.png'} is 12x12 but its image {image / 'a1.png'} is 16x12 (another aspect " \
           f"ratio: it is stretched)" in message
    write_meta(root, {"test": samples})
    with pytest.warns(MaskSizeWarning, match="2 mask"):  # meta.json folders are checked too
        load_dataset("meta", root, "test")


def test_mask_sizes_compare_upright_images(tmp_path: Path) -> None:
    """An image with an EXIF rotation is compared (and mapped) upright; so is a mask with one."""
    import warnings

    from siad.data.masks import MaskSizeWarning, check_mask_sizes

    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    image = tmp_path / "part.jpg"
    Image.new("RGB", (16, 12), (90, 90, 90)).save(image, exif=exif.tobytes())  # upright: 12 wide, 16 high
    upright_mask = save_mask(tmp_path / "upright.png", size=(16, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_mask_sizes([Sample(image, upright_mask, "part", "dent", 1)]) == []
    stored_flat = save_mask(tmp_path / "flat.png", size=(12, 16))
    with pytest.warns(MaskSizeWarning, match=r"flat.png is 16x12 but its image .*part.jpg is 12x16 \(another"):
        check_mask_sizes([Sample(image, stored_flat, "part", "dent", 1)])
    rotated_mask = tmp_path / "rotated_mask.png"
    pixels = np.zeros((12, 16), np.uint8)
    pixels[0, :4] = 255  # the top-left corner, stored flat
    Image.fromarray(pixels).save(rotated_mask, exif=exif.tobytes())
    upright = load_mask(rotated_mask)
    assert upright.shape == (16, 12) and upright[:4, -1].all() and upright.sum() == 4  # turned clockwise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_mask_sizes([Sample(image, rotated_mask, "part", "dent", 1)]) == []


def test_many_mismatched_masks_give_one_warning(tmp_path: Path) -> None:
    from siad.data.masks import MaskSizeWarning, check_mask_sizes

    samples = [Sample(save_image(tmp_path / f"{i:02d}.png"), save_mask(tmp_path / f"{i:02d}_mask.png", size=(6, 8)),
                      "c", "d", 1) for i in range(13)]
    with pytest.warns(MaskSizeWarning, match=r"^13 mask\(s\) differ .*; and 3 more$") as caught:
        assert len(check_mask_sizes(samples)) == 13
    assert len(caught) == 1
