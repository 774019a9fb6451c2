"""siad.runner and the distributed / resumable runs of siad.evaluate, siad.predict and siad.calibrate.

The multi-process tests launch `python -m torch.distributed.run` (torchrun) with the gloo backend on the
CPU, on 127.0.0.1, through `tests.dist_probe` (which records every image a process detects), on a tiny
saved model and a tiny MVTec-format tree written here, and compare with one process in this one."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from siad import calibrate as cal
from siad import evaluate as ev
from siad import predict as pr
from siad import runner
from tests.test_evaluate import _picture, make_mvtec_dataset, save_tiny_model

REPO = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT = 300


# ------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("distributed")
    return {"data": make_mvtec_dataset(base / "data", classes=("gear", "plate", "widget"), n_train=3),
            "model": save_tiny_model(base / "model")}


@pytest.fixture
def one_thread():
    """Exact equality with the launched processes (torchrun runs them with one thread each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(probe: Path, delay: float = 0.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="1", SIAD_PROBE_DIR=str(probe), SIAD_PROBE_DELAY=str(delay), HF_HUB_OFFLINE="1",
               MASTER_ADDR="127.0.0.1")
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo on the loopback interface only
    return env


def _torchrun(nproc: int, arguments: list[str], probe: Path, cwd: Path) -> subprocess.CompletedProcess:
    probe.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", str(_free_port()), "-m", "tests.dist_probe", *arguments]
    return subprocess.run(command, cwd=cwd, env=_environment(probe), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)


def _probed(probe: Path) -> dict[int, list[str]]:
    """The images each rank detected, in order."""
    return {int(f.stem[4:]): f.read_text().splitlines() for f in sorted(probe.glob("rank*.txt"))}


def _test_images(root: Path, classes: tuple[str, ...]) -> list[str]:
    from siad.data import load_dataset

    return [str(s.image_path) for s in load_dataset("mvtec", root, "test", classes=list(classes))]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------ runner units
@pytest.mark.parametrize("count", [0, 1, 2, 5, 9, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_batch_once_like_accelerates_split(count, world):
    from accelerate import PartialState

    shards = [runner.shard_bounds(count, rank, world) for rank in range(world)]
    covered = [i for start, stop in shards for i in range(start, stop)]
    assert covered == list(range(count))  # contiguous, in order, every batch once
    sizes = [stop - start for start, stop in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)  # the first ranks take the extras
    for rank, (start, stop) in enumerate(shards):
        assert all(runner.owner_of(i, count, world) == rank for i in range(start, stop))
        if world > 1:  # Accelerate's own split (no padding) of the same list, for this rank
            fake = SimpleNamespace(num_processes=world, process_index=rank, device="cpu")
            with PartialState.split_between_processes(fake, list(range(count))) as theirs:
                assert list(theirs) == list(range(start, stop))


def test_plan_batches_never_cross_a_class():
    batches = runner.plan_batches([("a", 5), ("b", 1), ("c", 4)], 2)
    assert [(b.group, b.start, b.stop) for b in batches] == [
        ("a", 0, 2), ("a", 2, 4), ("a", 4, 5), ("b", 5, 6), ("c", 6, 8), ("c", 8, 10)]
    assert [b.index for b in batches] == list(range(6))
    with pytest.raises(ValueError, match="batch_size"):
        runner.plan_batches([("a", 1)], 0)


class _Items:
    """A dataset whose items are their indices, slow enough for threads to overlap."""

    def __getitem__(self, index: int) -> int:
        time.sleep(0.002 * (index % 3))
        return index


@pytest.mark.parametrize("workers, threads", [(0, False), (0, True), (3, True)])
def test_batch_loader_gives_the_batches_in_order_in_this_process_or_threads(workers, threads):
    """Without DataLoader processes (workers=0, or threads for the torch-free ONNX path) the batches come
    in order, each item once."""
    batches = runner.plan_batches([("a", 7), ("b", 5)], 3)
    loaded = list(runner.batch_loader(_Items(), batches, workers, threads))
    assert loaded == [list(range(b.start, b.stop)) for b in batches]
    assert list(runner.batch_loader(_Items(), [], workers, threads)) == []


def test_disk_store_writes_atomically_and_reads_back(tmp_path):
    store = runner.DiskStore(tmp_path / "run", lambda value: {"v": np.asarray(value)}, lambda arrays: arrays["v"])
    store.save(3, [1.5, 2.5])
    assert store.has(3) and not store.has(4)
    assert np.array_equal(store.load(3), [1.5, 2.5])
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["batch-000003.npz"]  # no temporary file left

    def failing(handle):
        handle.write(b"half a file")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        runner.atomic_write(tmp_path / "run" / "batch-000004.npz", failing)
    assert not store.has(4) and [p.name for p in (tmp_path / "run").iterdir()] == ["batch-000003.npz"]
    store.discard()
    assert not tmp_path.joinpath("run").exists()


def test_one_process_is_not_distributed(monkeypatch):
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert runner.start_processes("cpu") == runner.Processes(rank=0, world=1, device="cpu")
    assert runner.start_processes("cuda:1").device == "cuda:1"


# ------------------------------------------------------------------------------------ one process
@pytest.mark.slow
def test_the_llm_answers_each_batch_at_once_in_both_passes(setup, monkeypatch):
    """Algorithm 1 in an evaluation: one generate call per pass per batch, for the whole batch."""
    from siad import SIADModel
    from siad.data import load_dataset
    from tests.test_chat import GenerationSpy

    model = SIADModel.from_pretrained(setup["model"]).eval()
    spy = GenerationSpy(model, monkeypatch)
    samples = load_dataset("mvtec", setup["data"], "test", classes=["gear", "plate"])  # 5 + 5 images
    evaluation = ev.evaluate_samples(model, samples, dataset="mvtec",
                                     settings=ev.EvalSettings(batch_size=3, progress=False, qualitative=0))
    assert evaluation.passes == ("pass1", "pass2")
    assert spy.calls == 8  # batches 3 + 2 per class, two passes each
    assert [len(batch) for batch in spy.conversations] == [3, 3, 2, 2] * 2


@pytest.mark.slow
def test_an_interrupted_evaluation_resumes_and_gives_the_same_report(setup, tmp_path, monkeypatch, capsys):
    arguments = ["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]), "--batch-size",
                 "2", "--map-only", "--eval-size", "64", "--no-plots", "--quiet", "--workers", "0"]
    clean = tmp_path / "clean"
    assert ev.main([*arguments, "--out", str(clean)]) == 0
    calls: list[int] = []
    from siad.evaluation import protocols  # evaluate_samples runs each batch with protocols.evaluate_batch

    original = protocols.evaluate_batch

    def interrupted(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed during the 4th batch
        return original(*args, **kwargs)
    monkeypatch.setattr(protocols, "evaluate_batch", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        ev.main([*arguments, "--out", str(out)])
    kept = sorted(p.name for p in (out / runner.RESUME_FOLDER).glob("*/batch-*.npz"))
    assert kept == ["batch-000000.npz", "batch-000001.npz", "batch-000002.npz"]
    calls.clear()
    monkeypatch.setattr(protocols, "evaluate_batch", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
    assert ev.main([*arguments, "--out", str(out), "--resume"]) == 0
    assert len(calls) == 9 - 3  # 3 classes of 5 images in batches of 2: 9 batches, 3 were done
    assert "resuming, 3 of 9 batches" in capsys.readouterr().err
    mine, theirs = (json.loads((folder / "report.json").read_text()) for folder in (out, clean))
    assert mine["classes"] == theirs["classes"] and mine["mean"] == theirs["mean"]
    assert (out / "scores.csv").read_bytes() == (clean / "scores.csv").read_bytes()
    assert not (out / runner.RESUME_FOLDER).exists()  # removed once the report is written
    calls.clear()
    assert ev.main([*arguments, "--out", str(out)]) == 0 and len(calls) == 9  # without --resume: everything again


@pytest.mark.slow
def test_an_unreadable_image_stops_the_evaluation_naming_the_file(setup, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(setup["data"] / "plate", root / "plate")
    broken = root / "plate" / "test" / "good" / "001.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(SystemExit) as info:
        ev.main(["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(root), "--map-only", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and str(broken) in capsys.readouterr().err


# ------------------------------------------------------------------------------------ several processes
@pytest.mark.slow
def test_two_processes_evaluate_exactly_like_one(setup, tmp_path, one_thread):
    """The paper's protocol (both passes, answers, original resolution) on 3 classes of 5 images in
    batches of 2: 9 batches, 5 on rank 0 and 4 on rank 1, class "plate" split between them."""
    arguments = ["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]),
                 "--batch-size", "2", "--no-plots", "--quiet"]
    single = tmp_path / "one"
    assert ev.main([*arguments, "--out", str(single), "--workers", "0"]) == 0
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    double, probe = tmp_path / "two", tmp_path / "probe"
    result = _torchrun(2, ["siad.evaluate", *arguments, "--out", str(double), "--workers", "1"], probe, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((folder / "report.json").read_text()) for folder in (single, double))
    assert two["classes"] == one["classes"] and two["mean"] == one["mean"]  # every number, exactly
    assert two["passes"] == ["pass1", "pass2"] and two["settings"] == one["settings"]
    assert (one["processes"], two["processes"]) == (1, 2)
    for name in ("scores.csv", "report.csv"):
        assert (double / name).read_bytes() == (single / name).read_bytes(), name
    seen = _probed(probe)
    assert sorted(seen) == [0, 1] and len(seen[0]) == 9 and len(seen[1]) == 6  # gear 2+2+1, plate 2+2 | 1, widget
    assert sorted(seen[0] + seen[1]) == sorted(_test_images(setup["data"], ("gear", "plate", "widget")))  # once each
    assert "rank 1/2" in result.stderr and "[batches 5-8]" in result.stderr
    assert not (double / runner.RESUME_FOLDER).exists() and list(cwd.iterdir()) == []


@pytest.mark.slow
def test_more_processes_than_batches_few_shot(setup, tmp_path, one_thread):
    """3 processes, 2 batches (one per class): rank 2 has nothing to do; the references drawn per class
    and seed are the same on every rank, so each seed's report equals the one-process report."""
    arguments = ["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]), "--classes",
                 "plate", "widget", "--shots", "1", "--shot-seeds", "0", "1", "--map-only", "--batch-size", "8",
                 "--eval-size", "64", "--no-plots", "--quiet", "--workers", "0"]
    single = tmp_path / "one"
    assert ev.main([*arguments, "--out", str(single)]) == 0
    triple, probe = tmp_path / "three", tmp_path / "probe"
    result = _torchrun(3, ["siad.evaluate", *arguments, "--out", str(triple)], probe, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for folder in ("seed_0", "seed_1", "."):
        one, three = (json.loads((base / folder / "report.json").read_text()) for base in (single, triple))
        assert three["classes"] == one["classes"] and three["mean"] == one["mean"], folder
        assert three.get("references") == one.get("references"), folder
    seen = _probed(probe)
    assert sorted(seen) == [0, 1]  # rank 2 detected nothing
    images = _test_images(setup["data"], ("plate", "widget"))
    assert sorted(seen[0] + seen[1]) == sorted(images * 2)  # each image once per seed
    assert "rank 2/3" in result.stderr and "ran 0 batches" in result.stderr


@pytest.fixture
def inputs(tmp_path) -> Path:
    """8 readable images (two with the same stem) and a broken file: 9 paths."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(4)
    for index in range(6):
        Image.fromarray(_picture(rng, (36 + 4 * index, 48))).save(folder / f"{index}.png")
    Image.fromarray(_picture(rng)).save(folder / "sub" / "0.png")
    Image.fromarray(_picture(rng)).save(folder / "sub" / "x.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


@pytest.mark.slow
def test_two_processes_predict_the_same_csv_and_overlays(setup, inputs, tmp_path, one_thread):
    arguments = ["--model", str(setup["model"]), "--class", "widget", str(inputs), "--batch-size", "2", "--quiet"]
    single = tmp_path / "one"
    assert pr.main([*arguments, "--out", str(single), "--workers", "0"]) == 0
    double, probe = tmp_path / "two", tmp_path / "probe"
    result = _torchrun(2, ["siad.predict", *arguments, "--out", str(double)], probe, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (double / pr.CSV_NAME).read_bytes() == (single / pr.CSV_NAME).read_bytes()
    rows = _csv(double / pr.CSV_NAME)
    assert len(rows) == 9 and sum(bool(r["error"]) for r in rows) == 1 and all(r["answer"] for r in rows if r["score"])
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    for overlay in (r["overlay"] for r in rows if r["overlay"]):
        assert (double / overlay).read_bytes() == (single / overlay).read_bytes(), overlay
    seen = _probed(probe)
    readable = [r["path"] for r in rows if not r["error"]]
    assert seen[0] and seen[1] and sorted(seen[0] + seen[1]) == sorted(readable)  # 5 batches: 3 + 2, none twice
    # 9 sorted paths in batches of 2: broken.png is the 7th, in batch 3, the first of rank 1's batches 3-4
    assert f"siad [rank 1/2]: predict: cannot score {inputs / 'broken.png'}" in result.stderr


@pytest.mark.slow
def test_a_killed_prediction_resumes_to_the_same_csv(setup, inputs, tmp_path):
    """SIGKILL after the second batch was kept; --resume detects only the images of the batches that
    were not kept, and the CSV (and overlays) equal an uninterrupted run's."""
    arguments = ["siad.predict", "--model", str(setup["model"]), "--class", "widget", str(inputs), "--batch-size",
                 "2", "--quiet", "--workers", "0"]
    clean, probe_clean = tmp_path / "clean", tmp_path / "probe-clean"
    probe_clean.mkdir()
    subprocess.run([sys.executable, "-m", "tests.dist_probe", *arguments, "--out", str(clean)], cwd=tmp_path,
                   env=_environment(probe_clean), check=True, timeout=LAUNCH_TIMEOUT, capture_output=True)
    out, probe = tmp_path / "out", tmp_path / "probe"
    probe.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "tests.dist_probe", *arguments, "--out", str(out)],
                               cwd=tmp_path, env=_environment(probe, delay=1.0), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    kept: list[Path] = []
    while len(kept) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        kept = sorted((out / runner.RESUME_FOLDER).glob("*/batch-*.npz"))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(kept) >= 2 and process.returncode == -signal.SIGKILL
    kept = sorted((out / runner.RESUME_FOLDER).glob("*/batch-*.npz"))  # what the kill left
    done = {int(p.stem.split("-")[1]) for p in kept}
    assert not list((out / runner.RESUME_FOLDER).glob("*/.*tmp*"))  # no partial batch file is ever visible
    partial = _csv(out / pr.CSV_NAME)
    assert 0 < len(partial) < 9  # the rows written before the kill
    (probe / "rank0.txt").unlink()
    resumed = subprocess.run([sys.executable, "-m", "tests.dist_probe", *arguments, "--out", str(out), "--resume"],
                             cwd=tmp_path, env=_environment(probe), timeout=LAUNCH_TIMEOUT, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / pr.CSV_NAME).read_bytes() == (clean / pr.CSV_NAME).read_bytes()
    paths = [Path(r["path"]) for r in _csv(clean / pr.CSV_NAME)]
    batches = runner.plan_batches([("widget", len(paths))], 2)
    expected = [str(paths[i]) for b in batches if b.index not in done for i in range(b.start, b.stop)
                if paths[i].name != "broken.png"]
    assert _probed(probe)[0] == expected  # only the batches that were not kept, in order
    for row in _csv(clean / pr.CSV_NAME):
        if row["overlay"]:
            assert (out / row["overlay"]).read_bytes() == (clean / row["overlay"]).read_bytes()
    assert not (out / runner.RESUME_FOLDER).exists()


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_both_naming_rank_and_file(setup, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(setup["data"], root)
    broken = root / "widget" / "test" / "scratch" / "001.png"  # in the last batch: rank 1's
    broken.write_bytes(b"not a picture")
    result = _torchrun(2, ["siad.evaluate", "--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(root),
                           "--map-only", "--batch-size", "4", "--quiet", "--out", str(tmp_path / "out")],
                       tmp_path / "probe", tmp_path)
    assert result.returncode != 0
    assert "rank 1/2 failed on batch 5" in result.stderr and str(broken) in result.stderr
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_two_processes_calibrate_to_the_one_process_threshold(setup, tmp_path, one_thread, capsys):
    arguments = ["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]), "--no-chat",
                 "--batch-size", "2", "--dry-run", "--quiet"]
    assert cal.main([*arguments, "--workers", "0"]) == 0
    single = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("threshold"))
    result = _torchrun(2, ["siad.calibrate", *arguments], tmp_path / "probe", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("threshold")] == [single]


@pytest.mark.slow
def test_a_launch_that_accelerate_sees_as_one_process_is_refused(setup, monkeypatch, tmp_path, capsys):
    """torchrun started 2 processes but Accelerate sees 1 (e.g. --device cuda without a GPU): each would
    run everything alone, so the command stops before any work."""
    import accelerate

    class OneProcess:
        def __init__(self, cpu: bool = False, **kwargs) -> None:
            self.num_processes, self.process_index, self.local_process_index = 1, 0, 0
            self.distributed_type, self.backend, self.device = "DistributedType.NO", None, torch.device("cpu")

    monkeypatch.setattr(accelerate, "PartialState", OneProcess)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="each process would run everything alone"):
        runner.start_processes("cuda")
    with pytest.raises(SystemExit) as info:
        ev.main(["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]), "--device", "cuda",
                 "--quiet", "--out", str(tmp_path / "out")])
    assert info.value.code == 2 and "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_accelerate_launch_multi_gpu_runs_two_cpu_processes_and_cpu_runs_one(setup, tmp_path, one_thread):
    """On a machine without MPI `accelerate launch --cpu --num_processes 2` starts one process (which runs
    everything: the same report, `processes` 1); `accelerate launch --multi_gpu --num_processes 2` is
    torchrun underneath and, with --device cpu, runs 2 gloo processes: the same report, `processes` 2."""
    arguments = ["siad.evaluate", "--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["data"]),
                 "--classes", "gear", "plate", "--map-only", "--eval-size", "64", "--batch-size", "2", "--no-plots",
                 "--quiet", "--device", "cpu", "--workers", "0"]
    single = tmp_path / "one"
    assert ev.main([*arguments[1:], "--out", str(single)]) == 0
    reference = json.loads((single / "report.json").read_text())
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    for flags, processes in ((["--cpu", "--num_processes", "2"], 1), (["--multi_gpu", "--num_processes", "2"], 2)):
        out, probe = tmp_path / f"acc{processes}", tmp_path / f"probe{processes}"
        probe.mkdir()
        result = subprocess.run([*launch, *flags, "-m", "tests.dist_probe", *arguments, "--out", str(out)],
                                cwd=tmp_path, env=_environment(probe), capture_output=True, text=True,
                                timeout=LAUNCH_TIMEOUT)
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        assert report["processes"] == processes and report["classes"] == reference["classes"], flags
        assert sorted(_probed(probe)) == list(range(processes)), flags
