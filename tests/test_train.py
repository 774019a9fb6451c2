"""train/train.py: a 3-step tiny run, exact resumption after an interruption, and bad settings that
fail before any model is built. Everything offline, on the CPU, in temporary folders."""

from __future__ import annotations

import errno
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from siad import training as T

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "train" / "train.py"
CLASSES = ("bottle", "widget")




@pytest.fixture(scope="module")
def train_script():
    """train/train.py as a module (it is a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("siad_train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_images(folder: Path, count: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:64, 0:64]
    for i in range(count):
        base = np.stack([x * 3 + rng.integers(0, 60), y * 3 + rng.integers(0, 60), (x + y) * 2], -1)
        image = (base + rng.normal(0, 8, (64, 64, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """An MVTec-format folder: 2 classes x 4 normal training images."""
    root = tmp_path_factory.mktemp("data") / "set"
    for k, name in enumerate(CLASSES):
        _write_images(root / name / "train" / "good", 4, seed=k)
    return root


def _config(tmp: Path, data_root: Path, out: str = "run", **sections) -> Path:
    """A YAML file for the tiny preset (LoRA dropout on, so that the RNG state matters)."""
    settings = {
        "model": {"preset": "tiny", "llm": {"lora_dropout": 0.1}},
        "data": {"name": "mvtec_format", "root": str(data_root), "seed": 0},
        "train": {"batch_size": 2, "max_steps": 3, "lr": "1e-3", "ckpt_every": 1, "keep_last": 2, "log_every": 1,
                  "seed": 0},
        "output": {"dir": str(tmp / out), "log_with": None},
    }
    for section, values in sections.items():
        settings[section].update(values)
    import yaml

    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def pushed() -> list:
    return []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root, train_script, pushed) -> Path:
    """A 3-step run from start to end (with TensorBoard logging and a mocked upload)."""
    tmp = tmp_path_factory.mktemp("a")

    from huggingface_hub import HfApi

    def fake_upload(api, *, repo_id, folder_path, **kwargs):  # the Hub is mocked: what would be uploaded
        from siad import SIADModel

        uploaded = SIADModel.from_pretrained(folder_path)
        pushed.append((repo_id, {k: v.detach().clone() for k, v in uploaded.named_parameters()}, Path(folder_path)))
        return f"mocked upload of {repo_id}"

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HfApi, "create_repo", lambda api, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
        patch.setattr(HfApi, "upload_folder", fake_upload)
        config = _config(tmp, data_root, output={"log_with": "tensorboard"})
        assert train_script.main(["--config", str(config), "--push-to-hub", "org/siad-test"]) == 0
    return tmp / "run"


def _trainable(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / T.WEIGHTS_FILE))


@pytest.mark.slow
def test_three_steps_lower_the_loss_and_write_checkpoints(uninterrupted, pushed):
    rows = T.read_log(uninterrupted / "log.csv")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(r["loss"] == pytest.approx(r["focal"] + r["dice"] + r["lm"], rel=1e-4) for r in rows)
    assert [s for s, _ in T.list_checkpoints(uninterrupted)] == [2, 3]  # keep_last=2
    last = uninterrupted / "checkpoints" / "step-000003"
    assert sorted(p.name for p in last.iterdir()) == ["optimizer.pt", "state.json", "trainable.safetensors",
                                                      "training_state-rank0.pt"]
    state = json.loads((last / "state.json").read_text())
    assert (state["step"], state["epoch"], state["offset"]) == (3, 0, 3)
    assert not any(p.name.startswith(".tmp-") for p in (uninterrupted / "checkpoints").iterdir())
    final = uninterrupted / "final"
    for name in ("config.json", "model.safetensors", "llm_adapter/adapter_model.safetensors", "README.md"):
        assert (final / name).is_file(), name
    assert list((uninterrupted / "tensorboard").rglob("events.out.tfevents.*"))
    # the final model holds the trained weights
    from siad import SIADModel

    model = SIADModel.from_pretrained(final)
    trained = _trainable(last)
    params = dict(model.named_parameters())
    for name, value in trained.items():
        assert torch.equal(params[name], value), name
    # --push-to-hub uploaded the trained model
    assert [repo for repo, _, _ in pushed] == ["org/siad-test"]
    assert pushed[0][2] == final  # the folder saved once, not a second save
    assert all(torch.equal(pushed[0][1][name], value) for name, value in trained.items())


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, data_root, train_script, uninterrupted,
                                                                 capsys):
    config = _config(tmp_path, data_root)

    def stop_after_two(step: int) -> None:
        if step == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_script.main(["--config", str(config)], on_step=stop_after_two)
    run = tmp_path / "run"
    assert [s for s, _ in T.list_checkpoints(run)] == [1, 2] and not (run / "final").exists()
    # a run killed while writing step 3's checkpoint leaves a partial folder behind
    partial = run / "checkpoints" / ".tmp-step-000003"
    partial.mkdir()
    (partial / T.WEIGHTS_FILE).write_bytes(b"garbage")
    # without --resume the old run is not overwritten
    with pytest.raises(SystemExit, match="already holds a training run"):
        train_script.main(["--config", str(config)])
    capsys.readouterr()
    assert train_script.main(["--config", str(config), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming from" in printed and "step-000002 (step 2, epoch 0)" in printed
    assert not partial.exists()
    ours, theirs = _trainable(run / "checkpoints" / "step-000003"), _trainable(uninterrupted / "checkpoints" / "step-000003")
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    for part in ("model.safetensors", "llm_adapter/adapter_model.safetensors"):
        a, b = load_file(str(run / "final" / part)), load_file(str(uninterrupted / "final" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    ours_log, theirs_log = T.read_log(run / "log.csv"), T.read_log(uninterrupted / "log.csv")
    assert [(r["step"], r["loss"], r["lm"]) for r in ours_log] == [(r["step"], r["loss"], r["lm"]) for r in theirs_log]
    # the optimizer state goes on too (same Adam moments at the end)
    opt_a = torch.load(run / "checkpoints" / "step-000003" / "optimizer.pt", weights_only=True)
    opt_b = torch.load(uninterrupted / "checkpoints" / "step-000003" / "optimizer.pt", weights_only=True)
    for k, state in opt_a["state"].items():
        assert all(torch.equal(state[n], opt_b["state"][k][n]) for n in state)


@pytest.mark.slow
def test_sigterm_saves_the_current_step_exits_cleanly_and_resume_loses_nothing(tmp_path, data_root, train_script,
                                                                                 uninterrupted, capsys):
    """What docker stop, Kubernetes and Slurm send: the step in progress ends, its checkpoint is saved
    (here no periodic checkpoint would have saved it), the status is 143, and --resume ends exactly where
    an uninterrupted run ends (issue 20)."""
    import os
    import signal

    config = _config(tmp_path, data_root, train={"ckpt_every": 100})
    before = signal.getsignal(signal.SIGTERM)

    def terminate_after_one(step: int) -> None:
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    assert train_script.main(["--config", str(config)], on_step=terminate_after_one) == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is put back
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 1 of 3" in err and "--resume" in err and "Traceback" not in err
    run = tmp_path / "run"
    assert [s for s, _ in T.list_checkpoints(run)] == [1] and not (run / "final").exists()
    assert train_script.main(["--config", str(config), "--resume"]) == 0
    for part in ("model.safetensors", "llm_adapter/adapter_model.safetensors"):
        a, b = load_file(str(run / "final" / part)), load_file(str(uninterrupted / "final" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    ours_log, theirs_log = T.read_log(run / "log.csv"), T.read_log(uninterrupted / "log.csv")
    assert [(r["step"], r["loss"]) for r in ours_log] == [(r["step"], r["loss"]) for r in theirs_log]


class _SignalledInWorker(torch.utils.data.Dataset):
    """Each item sends SIGTERM to the worker process that loads it (as Slurm signals every process)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)
        return index


def test_dataloader_workers_ignore_stop_signals():
    """Slurm signals every process of a job: a DataLoader worker must not die in the middle of a step."""
    from torch.utils.data import DataLoader

    loader = DataLoader(_SignalledInWorker(), batch_size=2, num_workers=1, worker_init_fn=T.ignore_stop_signals)
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3]]


@pytest.mark.slow
def test_resume_refuses_changed_settings(tmp_path, data_root, train_script, uninterrupted):
    config = _config(tmp_path, data_root, train={"lr": 5e-4})
    with pytest.raises(SystemExit, match=r"settings differ .*train\.lr"):
        train_script.main(["--config", str(config), f"output.dir={uninterrupted}", "--resume"])


# ---------------------------------------------------------------------------------------------
# Bad settings fail before any model is built


@pytest.fixture
def no_model(monkeypatch, train_script):
    """Building a model fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")
    monkeypatch.setattr(train_script, "build_model", refuse)
    monkeypatch.setattr("siad.model.SIADModel.__init__", refuse)


def _bad_cases(tmp: Path, data_root: Path) -> dict[str, tuple[list[str], str]]:
    empty_class = tmp / "with_empty"
    _write_images(empty_class / "bottle" / "train" / "good", 2, seed=0)
    (empty_class / "widget" / "train" / "good").mkdir(parents=True)
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    base = _config(tmp, data_root, out="bad")
    yaml_typo = tmp / "typo.yaml"
    yaml_typo.write_text(base.read_text() + "extra_section: {x: 1}\n")
    yaml_key = tmp / "key.yaml"
    yaml_key.write_text(base.read_text().replace("batch_size:", "batch_sise:"))
    return {
        "unknown yaml key": ([str(yaml_key)], r"unknown key 'train\.batch_sise'"),
        "unknown section": ([str(yaml_typo)], r"unknown section 'extra_section'"),
        "unknown override": ([str(base), "model.use_semm=false"], r"unknown key 'model\.use_semm'"),
        "bad model field": ([str(base), "model.map.adapter_lambda=2"], r"map.adapter_lambda"),
        "unknown part field": ([str(base), "model.map.lamda=2"], r"lamda"),
        "a part's field at the top": ([str(base), "model.adapter_lambda=2"], r"unknown key 'model\.adapter_lambda'"),
        "bad value": ([str(base), "train.lr=fast"], r"train\.lr='fast': must be a number"),
        "missing root": ([str(base), f"data.root={tmp / 'nowhere'}"], r"data\.root: .*nowhere does not exist"),
        "class without normals": ([str(base), f"data.root={empty_class}"], r"\['widget'\] have no normal images"),
        "requested class without normals": ([str(base), f"data.root={empty_class}", "data.classes=[widget]"],
                                            r"\['widget'\] have no normal images"),
        "unknown class": ([str(base), "data.classes=[nope]"], r"\['nope'\] not in the train split"),
        "unwritable output": ([str(base), f"output.dir={blocker / 'run'}"], r"output\.dir: .* is not a writable folder"),
        "no model source": ([str(base), "model.preset=null"], r"exactly one of model\.preset"),
        "quantized preset": ([str(base), "train.llm_quantization=8bit"], r"llm_quantization"),
        "unknown pseudo-anomaly": ([str(base), "data.pseudo_anomalies={scar:glitter: 1}"],
                                   r"data\.pseudo_anomalies=.*unknown kind\(s\) \['scar:glitter'\]"),
        "pseudo-anomaly word": ([str(base), "data.pseudo_anomalies=draem"], r"'cutpaste', 'mixture' or a mapping"),
        "probability above 1": ([str(base), "data.name_swap_prob=1.5"], r"data\.name_swap_prob=1\.5: must be a probability"),
        "teacher above 1": ([str(base), "train.lm_teacher_maps=2"], r"train\.lm_teacher_maps=2\.0: must be a probability"),
        "missing init folder": ([str(base), "model.preset=null", f"model.from_pretrained={tmp / 'init'}"],
                                r"model\.from_pretrained: no SIAD model folder"),
    }


def test_bad_settings_fail_fast_with_their_message(tmp_path, data_root, train_script, no_model):
    for case, (args, message) in _bad_cases(tmp_path, data_root).items():
        config, *overrides = args
        with pytest.raises(SystemExit, match=message):
            train_script.main(["--config", config, *overrides])
        print("ok:", case)


def test_command_line_reports_bad_settings_without_a_traceback(tmp_path, data_root):
    config = _config(tmp_path, data_root)
    result = subprocess.run([sys.executable, str(SCRIPT), "--config", str(config), "train.lrr=1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: override: unknown key 'train.lrr'")
    assert "Traceback" not in result.stderr


def test_check_mode_builds_nothing(tmp_path, data_root, train_script, no_model, capsys):
    assert train_script.main(["--config", str(_config(tmp_path, data_root)), "--check"]) == 0
    assert "8 normal images of 2 classes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Settings and data order


def test_settings_parse_yaml_numbers_and_dotted_overrides(tmp_path, data_root):
    settings = T.load_settings(_config(tmp_path, data_root), ["train.lr=5e-4", "model.map.use_sem=false",
                                                               "train.betas=[0.8, 0.9]"], base_dir=tmp_path)
    assert settings.train.lr == 5e-4 and settings.model.config["map"]["use_sem"] is False
    assert settings.train.betas == [0.8, 0.9]
    relative = T.load_settings(_config(tmp_path, data_root), ["output.dir=runs/x"], base_dir=tmp_path)
    assert relative.output.dir == str(tmp_path / "runs" / "x")
    # what a resumed run may not change (output.dir may: it does not change the weights)
    assert T.settings_changes(settings.to_dict(), relative) == ["model.map.use_sem", "train.betas", "train.lr"]


def test_every_shipped_config_parses():
    for path in sorted((REPO / "train" / "configs").glob("*.yaml")):
        settings = T.load_settings(path, [], base_dir=REPO)
        assert settings.output.dir.startswith(str(REPO)), path
    paper = T.load_settings(REPO / "train" / "configs" / "mvtec.yaml", [], base_dir=REPO)
    t = paper.train
    assert (t.epochs, t.batch_size, t.lr, t.mixed_precision) == (1, 8, 1e-3, "bf16")
    assert paper.model.from_pretrained == str(REPO / "runs" / "siad_init")


def test_epoch_batches_are_a_seeded_partition():
    one = T.epoch_batches(10, 3, seed=0, epoch=0)
    assert one == T.epoch_batches(10, 3, seed=0, epoch=0) != T.epoch_batches(10, 3, seed=0, epoch=1)
    assert [len(b) for b in one] == [3, 3, 3, 1] and sorted(i for b in one for i in b) == list(range(10))
    shards = [T.epoch_batches(10, 2, seed=0, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert {len(s) for s in shards} == {2} and {len(b) for s in shards for b in s} == {2}
    seen = {i for s in shards for b in s for i in b}
    assert seen == set(range(10))  # the last global batch is padded from the start of the permutation


def test_lr_schedule():
    assert T.lr_factor(0, 100, "constant", 0) == 1.0
    assert T.lr_factor(0, 100, "cosine", 10) == pytest.approx(0.1)
    assert T.lr_factor(100, 100, "cosine", 10) == pytest.approx(0.0)


@pytest.mark.slow
def test_diverging_run_stops_with_a_clear_error_and_saves_nothing_non_finite(tmp_path, data_root, train_script):
    """A loss that turns NaN or infinite (here lr=1e20) stops the run with exit status 1 and a message;
    no final model is written and every checkpoint on disk holds finite weights."""
    config = _config(tmp_path, data_root, train={"lr": 1e20, "max_steps": 6})
    with pytest.raises(SystemExit, match=r"error: the loss is not finite at step \d+") as stopped:
        train_script.main(["--config", str(config)])
    assert stopped.value.code != 0
    run = tmp_path / "run"
    assert not (run / "final").exists()
    for _, checkpoint in T.list_checkpoints(run):
        assert all(torch.isfinite(t).all() for t in _trainable(checkpoint).values()), checkpoint


@pytest.mark.slow
def test_non_finite_trainable_weights_are_never_checkpointed(tmp_path):
    weights = [("a", torch.ones(3)), ("b", torch.tensor([1.0, float("inf")]))]
    with pytest.raises(T.TrainingError, match=r"1 of 2 trainable tensors hold NaN or infinite values \(\['b'\]\)"):
        T.save_trainable(weights, tmp_path / T.WEIGHTS_FILE)
    assert not (tmp_path / T.WEIGHTS_FILE).exists()


# ---------------------------------------------------------------------------------------------
# Unreadable checkpoints, a full disk, unreadable images


def _interrupted_at(tmp: Path, data_root: Path, train_script, step: int) -> tuple[Path, Path]:
    """A run killed right after writing the checkpoint of `step` (no final model)."""
    config = _config(tmp, data_root)

    def stop(done: int) -> None:
        if done == step:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_script.main(["--config", str(config)], on_step=stop)
    return config, tmp / "run"


def _same_final_weights(run: Path, reference: Path) -> None:
    for part in ("model.safetensors", "llm_adapter/adapter_model.safetensors"):
        a, b = load_file(str(run / "final" / part)), load_file(str(reference / "final" / part))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


@pytest.mark.slow
@pytest.mark.parametrize("broken", [T.WEIGHTS_FILE, T.STATE_FILE])
def test_resume_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, data_root, train_script, uninterrupted,
                                                                 capsys, broken):
    """A garbage trainable.safetensors or state.json used to stop --resume with a bare SafetensorError or
    JSONDecodeError naming no file."""
    config, run = _interrupted_at(tmp_path, data_root, train_script, 3)
    assert [s for s, _ in T.list_checkpoints(run)] == [2, 3]
    bad = run / "checkpoints" / "step-000003" / broken
    bad.write_bytes(b"\x00garbage{" * 7)
    capsys.readouterr()
    assert train_script.main(["--config", str(config), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"skipping the checkpoint {bad.parent}: {bad} cannot be read" in printed
    assert "resuming from" in printed and "step-000002 (step 2, epoch 0)" in printed
    _same_final_weights(run, uninterrupted)
    assert T.checkpoint_problem(run / "checkpoints" / "step-000003") is None  # rewritten by the resumed run


@pytest.mark.slow
def test_resume_with_no_readable_checkpoint_says_so(tmp_path, data_root, train_script, uninterrupted, no_model):
    run = tmp_path / "copy"
    shutil.copytree(uninterrupted / "checkpoints", run / "checkpoints")
    (run / "checkpoints" / "step-000002" / T.WEIGHTS_FILE).write_bytes(b"garbage")
    (run / "checkpoints" / "step-000003" / T.STATE_FILE).write_text("{not json")
    config = _config(tmp_path, data_root, output={"dir": str(run)})
    with pytest.raises(SystemExit, match=r"none of the 2 checkpoints in .* can be read \(.*step-000003/state.json "
                                         r"cannot be read: .*; .*step-000002/trainable.safetensors cannot be read"):
        train_script.main(["--config", str(config), "--resume"])
    with pytest.raises(SystemExit, match=r"--resume-from: .*step-000002/trainable.safetensors cannot be read"):
        train_script.main(["--config", str(config), "--resume-from", str(run / "checkpoints" / "step-000002")])


@pytest.mark.slow
@pytest.mark.parametrize("name", [T.WEIGHTS_FILE, T.STATE_FILE, "optimizer.pt", "training_state-rank0.pt"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
def test_checkpoint_problem_names_the_unreadable_file(tmp_path, uninterrupted, name, damage):
    checkpoint = tmp_path / "step-000003"
    shutil.copytree(uninterrupted / "checkpoints" / "step-000003", checkpoint)
    assert T.checkpoint_problem(checkpoint) is None
    path = checkpoint / name
    if damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not really" * 3)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.unlink()
    problem = T.checkpoint_problem(checkpoint)
    assert problem is not None and problem.startswith(f"{path} ")


def test_state_json_without_its_fields_is_refused_by_name(tmp_path):
    (tmp_path / T.STATE_FILE).write_text('{"step": 3}')
    with pytest.raises(ValueError, match=r"state.json is not a checkpoint state \(missing \['epoch'"):
        T.read_state(tmp_path)


@pytest.mark.slow
def test_a_full_disk_is_said_plainly_leaves_no_partial_folder_and_resume_works(tmp_path, data_root, train_script,
                                                                                 uninterrupted, monkeypatch, capsys):
    """A full disk used to surface as torch's cryptic "unexpected pos" and leave the partial folder."""
    real_save = T.save_torch

    def full_at_step_two(obj, path):
        if ".tmp-step-000002" in str(path):
            path.write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(obj, path)

    config = _config(tmp_path, data_root)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(T, "save_torch", full_at_step_two)
        with pytest.raises(SystemExit, match=r"^error: the disk is full: writing the checkpoint of step 2 into "
                                             r".*\.tmp-step-000002 failed \(\[Errno 28\] No space left on device.*"
                                             r"The partial folder was removed .* continue with --resume") as stopped:
            train_script.main(["--config", str(config)])
    assert stopped.value.code != 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    assert not (run / "final").exists()
    capsys.readouterr()
    assert train_script.main(["--config", str(config), "--resume"]) == 0
    assert "step-000001 (step 1, epoch 0)" in capsys.readouterr().out
    _same_final_weights(run, uninterrupted)


def test_real_writer_errors_are_recognised_as_a_full_disk():
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    wrapped.__context__ = OSError(errno.ENOSPC, "No space left on device")
    assert T.is_disk_full(wrapped)  # torch.save to a file object
    assert T.is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not T.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_partial_folders_go_before_the_write_probe_and_a_full_disk_is_named(tmp_path, data_root, monkeypatch):
    """A full disk that a killed run's partial folder fills must not block --resume."""
    settings = T.load_settings(_config(tmp_path, data_root), [], base_dir=tmp_path)
    out = Path(settings.output.dir)
    partial = out / "checkpoints" / ".tmp-step-000007"
    partial.mkdir(parents=True)
    (partial / T.WEIGHTS_FILE).write_bytes(b"x" * 1000)
    (out / ".tmp-final").mkdir()
    real_probe = tempfile.NamedTemporaryFile

    def probe(*args, **kwargs):
        if partial.exists() or (out / ".tmp-final").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", probe)
    with pytest.raises(T.SettingsError, match=r"output\.dir: the disk holding .* is full"):
        T.check_output(settings, resume=True, clean=False)  # --check leaves them
    assert T.check_output(settings, resume=True) == out
    assert not partial.exists() and not (out / ".tmp-final").exists()


def test_commit_folder_fsyncs_every_file_and_folder_before_the_rename(tmp_path, monkeypatch):
    synced: list[Path] = []
    import siad.checkpoints

    real = siad.checkpoints._fsync_path
    monkeypatch.setattr(siad.checkpoints, "_fsync_path", lambda path: (synced.append(Path(path)), real(path)))
    tmp = tmp_path / ".tmp-step-000001"
    (tmp / "deepspeed").mkdir(parents=True)
    for name in ("a.safetensors", "state.json", "deepspeed/shard.pt"):
        (tmp / name).write_text(name)
    final = T.commit_folder(tmp, tmp_path / "step-000001")
    assert final.is_dir() and not tmp.exists()
    before = {tmp / n for n in ("a.safetensors", "state.json", "deepspeed/shard.pt", "deepspeed")} | {tmp}
    assert set(synced[:-1]) == before and synced[-1] == tmp_path  # the parent folder after the rename
    assert synced.index(tmp / "deepspeed/shard.pt") < synced.index(tmp / "deepspeed") < synced.index(tmp)


def test_check_decodes_every_image_and_names_each_unreadable_one(tmp_path, train_script, no_model):
    """A corrupt image in train/good used to pass --check and stop the run at the step that drew it."""
    root = tmp_path / "set"
    _write_images(root / "bottle" / "train" / "good", 3, seed=0)
    good = root / "bottle" / "train" / "good"
    (good / "005.png").write_bytes((good / "000.png").read_bytes()[:300])  # truncated: the header still reads
    (good / "006.png").write_text("not an image")
    Image.new("L", (300, 200)).save(good / "007.png")
    config = _config(tmp_path, root, model={"vision": {"max_input_pixels": 50_000}})
    with pytest.raises(SystemExit, match=r"data: 3 of 6 training images cannot be used") as refused:
        train_script.main(["--config", str(config), "--check"])
    message = str(refused.value)
    for name in ("005.png", "006.png", "007.png"):
        assert str(good / name) in message, name
    assert "truncated" in message and "300 x 200 pixels" in message
    assert "000.png" not in message and "001.png" not in message


def test_pseudo_anomaly_settings_become_dataset_options():
    from siad.data.pseudo import default_weights

    settings = T.DataSettings(name="mvtec_format", root="x")
    assert T.pseudo_anomaly_options(settings) == {"foreign_prob": 0.0, "name_swap_prob": 0.0}  # the paper's
    settings.pseudo_anomalies, settings.foreign_prob, settings.name_swap_prob = "mixture", 0.3, 0.25
    assert T.pseudo_anomaly_options(settings) == {"weights": default_weights(), "foreign_prob": 0.3,
                                                  "name_swap_prob": 0.25}
    settings.pseudo_anomalies = {"scar:tone": 2.0, "cutpaste": 1.0}
    assert T.pseudo_anomaly_options(settings)["weights"] == {"scar:tone": 2.0, "cutpaste": 1.0}


def test_teacher_map_probability_falls_linearly_to_zero():
    assert [T.teacher_maps_probability(s, 0.8, 4) for s in (0, 1, 2, 4, 9)] == pytest.approx([0.8, 0.6, 0.4, 0, 0])
    assert T.teacher_maps_probability(100, 0.5, 0) == 0.5  # no schedule: constant
