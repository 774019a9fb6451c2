#!/usr/bin/env python
"""Train SIAD-LLM: one script for the CPU, one GPU, several GPUs and several machines.

    python train/train.py --config train/configs/mini.yaml [section.key=value ...]
    accelerate launch --config_file train/accelerate_deepspeed_zero2.yaml train/train.py --config ...
    python train/train.py --config ... --resume              # continue from OUT/checkpoints
    python train/train.py --config ... --push-to-hub org/siad-llm

Each step: a batch of normal images and their CutPaste + Poisson pseudo-anomalies (eq. 1) goes
through `SIADModel.forward`, which runs both passes of the self-improvement loop (DESIGN 3.10,
3.12) and returns the loss of DESIGN 3.11 (focal + dice per stage and pass, plus the LLM's
cross-entropy). See train/README.md for the settings, the output folder and resumption.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # a clone used without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from tqdm.auto import tqdm  # noqa: E402

from siad import training as T  # noqa: E402
from siad.answers import pem_position_edges  # noqa: E402

StepHook = Callable[[int], None]


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train/train.py", description="Train SIAD-LLM (see train/README.md).")
    parser.add_argument("--config", type=Path, required=True, help="a YAML settings file (train/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="setting overrides, values parsed as YAML (e.g. train.lr=5e-4 model.map.use_sem=false)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in OUT/checkpoints (start afresh if there is none)")
    parser.add_argument("--resume-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="continue from this checkpoint folder (OUT/checkpoints/step-NNNNNN)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="upload the final model to this Hub repo (overrides output.push_to_hub)")
    parser.add_argument("--check", action="store_true",
                        help="check the settings, the data and the output folder, print them, and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, on_step: StepHook | None = None) -> int:
    """The command line. Bad settings exit with `error: <message>` before any model is built. A stop
    signal (SIGTERM) ends the run after the current step with its checkpoint saved: the status is then
    128 + the signal's number (143). on_step: called with the step number after each optimizer step
    (for tests)."""
    args = parse_args(argv)
    try:
        settings = T.load_settings(args.config, args.overrides, base_dir=REPO_ROOT)
        if args.push_to_hub is not None:
            settings.output.push_to_hub = T.check_repo_id(args.push_to_hub)
        if args.check:
            check_only(settings)
            return 0
        run(settings, resume=args.resume or args.resume_from is not None, resume_from=args.resume_from,
            on_step=on_step)
    except T.TrainingStopped as stopped:  # a clean stop: the checkpoint of the current step is saved
        print(str(stopped), file=sys.stderr, flush=True)
        return 128 + stopped.signal_number
    except (T.SettingsError, T.TrainingError) as error:
        raise SystemExit(f"error: {error}") from None
    except OSError as error:  # e.g. the log or a tracker's file on a full disk
        if not T.is_disk_full(error):
            raise
        raise SystemExit(f"error: the disk is full ({error}); free some space, then continue with --resume") from None
    return 0


def check_only(settings: T.RunSettings) -> None:
    """--check: every check of a run, nothing built; every training image is decoded as training will."""
    import yaml  # deferred: PyYAML is the optional extra [train]

    config = T.model_config(settings)
    T.check_environment(settings)
    samples = T.load_training_samples(settings)
    T.check_output(settings, resume=True, clean=False)
    T.check_images(samples, config.vision.max_input_side, config.vision.max_input_pixels)
    print(yaml.safe_dump(settings.to_dict(), sort_keys=False), end="")
    classes = sorted({s.class_name for s in samples})
    print(f"# {len(samples)} normal images of {len(classes)} classes; model image_size {config.vision.image_size}")


# ---------------------------------------------------------------------------------------------
# Building blocks


def find_checkpoint(out: Path, resume: bool, resume_from: Path | None,
                    report: Callable[[str], None] = print) -> Path | None:
    """The checkpoint to continue from, or None for a fresh run: --resume takes the newest one that
    can be read (reporting any it skips), --resume-from the given one, refused by name if unreadable."""
    if resume_from is not None:
        path = resume_from.expanduser().resolve()
        if not (path / T.STATE_FILE).is_file():
            raise T.SettingsError(f"--resume-from: {path} is not a complete checkpoint ({T.STATE_FILE} is missing)")
        problem = T.checkpoint_problem(path)
        if problem is not None:
            raise T.SettingsError(f"--resume-from: {problem}")
        return path
    return T.resume_checkpoint(out, report) if resume else None


def make_accelerator(settings: T.RunSettings, config: Any, out: Path) -> Any:
    """The Accelerator (mixed precision, gradient accumulation, trackers); DeepSpeed settings that
    Accelerate cannot infer without a prepared data loader are filled in here."""
    from accelerate import Accelerator  # deferred: train.py --check runs without torch
    from accelerate.utils import (DistributedDataParallelKwargs, DistributedType,  # deferred: as above
                                  is_tensorboard_available)

    log_with = settings.output.log_with
    if log_with == "tensorboard" and not is_tensorboard_available():
        warnings.warn("tensorboard is not installed: logging to OUT/log.csv only (pip install tensorboard)")
        log_with = None
    # ImageBind's text logit scale gets no gradient when the encoder trains: DDP must allow for that
    ddp = DistributedDataParallelKwargs(find_unused_parameters=bool(config.vision.trainable or config.text.trainable))
    accelerator = Accelerator(mixed_precision=settings.train.mixed_precision,
                              gradient_accumulation_steps=settings.train.grad_accum,
                              log_with=log_with, project_dir=str(out), kwargs_handlers=[ddp])
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = settings.train.batch_size * 2  # normal + pseudo-anomalous
        ds["gradient_clipping"] = settings.train.max_grad_norm or 0.0
    return accelerator


def is_deepspeed(accelerator: Any) -> bool:
    from accelerate.utils import DistributedType  # deferred: train.py --check runs without torch

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def build_model(settings: T.RunSettings, config: Any, accelerator: Any) -> Any:
    """The model on the accelerator's device: a preset built from `train.seed`, or a saved folder.
    With a 16-bit model.dtype the trainable parameters are kept in float32 (DeepSpeed keeps its own
    float32 master copy instead)."""
    import torch  # deferred: train.py --check runs without torch

    from siad.model import SIADModel  # deferred: train.py --check runs without torch

    dtype = getattr(torch, settings.model.dtype)
    torch.manual_seed(settings.train.seed)
    if settings.model.from_pretrained is None:
        model = SIADModel(config, dtype=dtype, device=accelerator.device)
    else:
        from siad.hub import load_model_folder  # deferred: train.py --check runs without torch

        model = load_model_folder(SIADModel, T.model_folder(settings), config=config, dtype=dtype,
                                  device=accelerator.device, llm_quantization=settings.train.llm_quantization)
    if dtype != torch.float32 and not is_deepspeed(accelerator):
        for _, param in model.trainable_parameters():
            param.data = param.data.float()
    if settings.train.grad_checkpointing:
        from siad.llm import enable_activation_checkpointing  # deferred: train.py --check runs without torch

        enable_activation_checkpointing(model.llm.get_base_model())
    return model.train()


def make_optimizer(settings: T.RunSettings, model: Any, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and its learning-rate schedule (stepped per optimizer step)."""
    import torch  # deferred: train.py --check runs without torch

    t = settings.train
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=t.lr, betas=tuple(t.betas),
                                  eps=t.eps, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: T.lr_factor(step, total_steps, t.lr_schedule, t.warmup_steps))
    return optimizer, scheduler


def check_finite_loss(accelerator: Any, output: Any, step: int) -> None:
    """Stop the run (on every process) when a loss is NaN or infinite, before it reaches the weights.
    Nothing from this step on is saved; the last checkpoint stays the newest."""
    import torch  # deferred: train.py --check runs without torch

    bad = torch.tensor(0.0 if bool(torch.isfinite(output.loss.detach()).all()) else 1.0, device=accelerator.device)
    if float(accelerator.reduce(bad, reduction="sum")) > 0:
        parts = ", ".join(f"{k} {v:.4g}" for k, v in output.as_floats().items())
        raise T.TrainingError(f"the loss is not finite at step {step} ({parts}) on at least one process: training "
                              f"diverged. Nothing from this step on is saved; lower train.lr or set "
                              f"train.max_grad_norm, then resume from the last checkpoint with --resume")


def save_checkpoint(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, settings: T.RunSettings,
                    out: Path, position: dict[str, Any]) -> None:
    """Write OUT/checkpoints/step-N atomically (temporary folder, files fsynced, then rename); keep the
    last K. A failed write removes the temporary folder; a full disk is a `TrainingError` saying so."""
    step = position["step"]
    tmp = out / T.CHECKPOINT_DIR / f"{T.TMP_PREFIX}{T.checkpoint_name(step)}"
    what = f"the checkpoint of step {step}"
    if accelerator.is_main_process:
        with T.writing_folder(tmp, what):
            T.checkpoint_tmp(out, step)
    accelerator.wait_for_everyone()
    rank = accelerator.process_index
    with T.writing_folder(tmp, what):
        if accelerator.is_main_process:
            T.save_trainable(accelerator.unwrap_model(model).trainable_parameters(), tmp / T.WEIGHTS_FILE)
        if is_deepspeed(accelerator):  # ZeRO-2 partitions the optimizer state: DeepSpeed writes its own files
            model.save_checkpoint(str(tmp), tag="deepspeed", exclude_frozen_parameters=True)
        elif accelerator.is_main_process:
            T.save_torch(optimizer.state_dict(), tmp / "optimizer.pt")
        scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
        T.save_torch({"scheduler": scheduler.state_dict(), "scaler": scaler, "rng": T.rng_state()},
                     tmp / f"training_state-rank{rank}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with T.writing_folder(tmp, what):
            T.write_state(tmp, {**position, "world_size": accelerator.num_processes, "settings": settings.to_dict()})
            T.commit_folder(tmp, out / T.CHECKPOINT_DIR / T.checkpoint_name(step))
        T.prune_checkpoints(out, settings.train.keep_last)
    accelerator.wait_for_everyone()


def load_checkpoint_state(accelerator: Any, model: Any, optimizer: Any, scheduler: Any,
                          checkpoint: Path) -> dict[str, Any]:
    """Restore optimizer, scheduler, grad scaler (the weights are loaded before `prepare`); return the
    RNG states to restore right before the first step."""
    import torch  # deferred: train.py --check runs without torch

    rank = accelerator.process_index
    if is_deepspeed(accelerator):  # `model` is the DeepSpeed engine: optimizer partitions and fp32 master weights
        model.load_checkpoint(str(checkpoint), tag="deepspeed", load_module_strict=False,
                              load_optimizer_states=True, load_lr_scheduler_states=False)
    else:
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
    extra = torch.load(checkpoint / f"training_state-rank{rank}.pt", map_location="cpu", weights_only=True)
    scheduler.load_state_dict(extra["scheduler"])
    if extra["scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(extra["scaler"])
    return extra["rng"]


def check_resumable(checkpoint: Path, settings: T.RunSettings, world_size: int) -> dict[str, Any]:
    """The checkpoint's position, refused if the settings or process count changed the weights' path."""
    state = T.read_state(checkpoint)
    changed = T.settings_changes(state["settings"], settings)
    if changed:
        raise T.SettingsError(f"--resume: the settings differ from those of {checkpoint} in {changed}; a resumed run "
                              f"must use the same settings (only {sorted(T.RESUMABLE_CHANGES)} may change)")
    if state["world_size"] != world_size:
        raise T.SettingsError(f"--resume: {checkpoint} was written by {state['world_size']} processes, this run has "
                              f"{world_size}; the data order depends on it, resume with the same number")
    return state


def save_final(accelerator: Any, model: Any, out: Path, push_to_hub: str | None) -> Path:
    """`save_pretrained(OUT/final)` (written to a temporary folder, then renamed) and the upload."""
    final = out / T.FINAL_DIR
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        tmp = out / f"{T.TMP_PREFIX}{T.FINAL_DIR}"
        with T.writing_folder(tmp, "the final model"):
            if tmp.exists():
                shutil.rmtree(tmp)
            unwrapped.save_pretrained(tmp, repo_id=push_to_hub)
            T.commit_folder(tmp, final)
        accelerator.print(f"saved the model to {final}")
        if push_to_hub:
            from siad.hub import upload_model_folder  # deferred: train.py --check runs without torch

            url = upload_model_folder(final, push_to_hub)  # the folder just saved: one save, one upload
            accelerator.print(f"pushed the model to {url or push_to_hub}")
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------
# The run


def run(settings: T.RunSettings, resume: bool = False, resume_from: Path | None = None,
        on_step: StepHook | None = None) -> Path:
    """Train as the settings say; return the folder of the final model (OUT/final)."""
    # 1. Everything that can be wrong is checked before a model is built.
    config = T.model_config(settings)
    T.check_environment(settings)
    samples = T.load_training_samples(settings)
    out = T.check_output(settings, resume=resume)  # removes the partial folders of a failed run first
    accelerator = make_accelerator(settings, config, out)
    checkpoint = find_checkpoint(out, resume, resume_from, report=accelerator.print)
    state = check_resumable(checkpoint, settings, accelerator.num_processes) if checkpoint else None

    import torch  # deferred: train.py --check runs without torch
    from torch.utils.data import DataLoader  # deferred: train.py --check runs without torch

    from siad.data.dataset import PseudoAnomalyDataset, collate_pairs  # deferred: train.py --check runs without torch

    t, d = settings.train, settings.data
    named = d.name.lower() not in ("mvtec_format", "meta")
    dataset = PseudoAnomalyDataset(samples, config.vision.image_size, config.vision.resize_mode, d.seed,
                                   dataset_name=d.name.lower() if named else None,
                                   max_input_side=config.vision.max_input_side, max_input_pixels=config.vision.max_input_pixels,
                                   position_edges=pem_position_edges(config.vision.image_size, config.map.pem_patch_size),
                                   **T.pseudo_anomaly_options(d))
    rank, world = accelerator.process_index, accelerator.num_processes
    micro_per_epoch = len(T.epoch_batches(len(dataset), t.batch_size, d.seed, 0, rank, world))
    steps_per_epoch = micro_per_epoch // t.grad_accum
    if steps_per_epoch == 0:
        raise T.SettingsError(f"train.grad_accum={t.grad_accum}: an epoch holds only {micro_per_epoch} batches of "
                              f"{t.batch_size} normal images per process ({len(dataset)} images)")
    total_steps = t.max_steps or t.epochs * steps_per_epoch

    # 2. The model, the optimizer, and the state of a resumed run.
    model = build_model(settings, config, accelerator)
    if checkpoint is not None:
        T.load_trainable(model, checkpoint / T.WEIGHTS_FILE)
    optimizer, scheduler = make_optimizer(settings, model, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer, device_placement=[False, None])
    step, epoch, offset, elapsed = 0, 0, 0, 0.0
    rng = None
    if checkpoint is not None:
        rng = load_checkpoint_state(accelerator, model, optimizer, scheduler, checkpoint)
        step, epoch, offset, elapsed = state["step"], state["epoch"], state["offset"], state["elapsed_s"]
        accelerator.print(f"resuming from {checkpoint} (step {step}, epoch {epoch})")
    elif resume:
        accelerator.print(f"no checkpoint in {out / T.CHECKPOINT_DIR}: starting afresh")
    log = T.CSVLog(out / "log.csv", resume_step=step if checkpoint else None) if accelerator.is_main_process else None
    if accelerator.log_with:
        accelerator.init_trackers("tensorboard", config=_tracker_config(settings))
    accelerator.print(f"{len(dataset)} normal images, {steps_per_epoch} steps per epoch, {total_steps} steps; "
                      f"{sum(p.numel() for _, p in accelerator.unwrap_model(model).trainable_parameters()):,} "
                      f"trainable parameters; output {out}")

    # 3. The loop: one optimizer step = grad_accum batches of batch_size normal images per process.
    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not accelerator.is_local_main_process)
    sums = torch.zeros(4, dtype=torch.float64)
    micro, images, window_start = 0, 0, time.perf_counter()
    run_start = time.perf_counter() - elapsed
    if rng is not None:
        T.set_rng_state(rng)
    stop = T.StopRequest().install()  # SIGTERM now ends the run after the current step (restored below)
    try:
        while step < total_steps:
            dataset.set_epoch(epoch)
            batches = T.epoch_batches(len(dataset), t.batch_size, d.seed, epoch, rank, world)
            batches = batches[:steps_per_epoch * t.grad_accum]
            loader = DataLoader(dataset, batch_sampler=batches[offset:], collate_fn=collate_pairs,
                                num_workers=t.num_workers, pin_memory=accelerator.device.type == "cuda",
                                worker_init_fn=T.ignore_stop_signals if t.num_workers else None,
                                generator=torch.Generator().manual_seed(d.seed))  # keeps the global RNG untouched
            for batch in loader:
                with accelerator.accumulate(model):
                    output = model(batch, teacher_maps=T.teacher_maps_probability(step, t.lm_teacher_maps,
                                                                                  t.lm_teacher_maps_steps))
                    check_finite_loss(accelerator, output, step + 1)
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients and t.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                parts = output.as_floats()
                sums += torch.tensor([parts["loss"], parts["focal"], parts["dice"], parts["lm"]], dtype=torch.float64)
                micro, images, offset = micro + 1, images + batch["images"].shape[0], offset + 1
                if not accelerator.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]  # the rate this step used
                scheduler.step()
                step += 1
                if offset == len(batches):
                    epoch, offset = epoch + 1, 0
                bar.update(1)
                now = time.perf_counter()
                speed = images * world / max(now - window_start, 1e-9)
                means = (sums / micro).tolist()
                bar.set_postfix(loss=f"{means[0]:.3f}", focal=f"{means[1]:.3f}", dice=f"{means[2]:.3f}",
                                lm=f"{means[3]:.3f}", img_s=f"{speed:.1f}", refresh=False)
                if step % t.log_every == 0 or step == total_steps:
                    reduced = accelerator.reduce((sums / micro).to(accelerator.device), reduction="mean").tolist()
                    row = {"step": step, "epoch": epoch + offset / len(batches), "loss": reduced[0],
                           "focal": reduced[1], "dice": reduced[2], "lm": reduced[3],
                           "lr": lr, "images_per_s": speed, "elapsed_s": now - run_start}
                    if log is not None:
                        log.write(row)
                    accelerator.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
                    sums.zero_()
                    micro, images, window_start = 0, 0, time.perf_counter()
                position = {"step": step, "epoch": epoch, "offset": offset,
                            "elapsed_s": time.perf_counter() - run_start}
                saved = (t.ckpt_every and step % t.ckpt_every == 0) or step == total_steps
                if saved:
                    save_checkpoint(accelerator, model, optimizer, scheduler, settings, out, position)
                if on_step is not None:
                    on_step(step)
                if step >= total_steps:
                    break
                if stop_agreed(accelerator, stop):  # SIGTERM: this step's checkpoint, then a clean exit
                    if not saved:
                        save_checkpoint(accelerator, model, optimizer, scheduler, settings, out, position)
                    number = stop.signal_number or signal.SIGTERM
                    raise T.TrainingStopped(
                        f"stopped by {signal.Signals(number).name} after step {step} of {total_steps}: its checkpoint "
                        f"is {out / T.CHECKPOINT_DIR / T.checkpoint_name(step)}; continue with --resume", int(number))
        bar.close()
        return save_final(accelerator, model, out, settings.output.push_to_hub)
    finally:
        stop.restore()
        bar.close()
        if log is not None:
            log.close()
        accelerator.end_training()


def stop_agreed(accelerator: Any, stop: T.StopRequest) -> bool:
    """Whether any process received a stop signal (every process agrees, so that all stop after the
    same step and save one checkpoint together)."""
    import torch  # deferred: train.py --check runs without torch

    asked = torch.tensor(0.0 if stop.signal_number is None else float(stop.signal_number), device=accelerator.device)
    if accelerator.num_processes > 1:
        asked = accelerator.reduce(asked, reduction="sum")
    return float(asked) > 0


def _tracker_config(settings: T.RunSettings) -> dict[str, Any]:
    """The settings as flat scalars (TensorBoard's hparams accept numbers, strings and booleans)."""
    flat = {}
    for key, value in settings.flat().items():
        flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


if __name__ == "__main__":
    sys.exit(main())
