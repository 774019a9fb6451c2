"""Batch inference across processes, GPUs and machines: what `siad.evaluate`, `siad.predict` and
`siad.calibrate` share (DESIGN 10).

A run is a list of image files, ordered group by group (a group: a class), cut into batches that
never cross a group (`plan_batches`); batch i holds the same images whatever the number of processes,
so every image is detected in the same batch as in a one-process run (batched generation and batched
kernels then give the same numbers).

- Processes (`start_processes`): a plain `python -m siad.evaluate ...` is one process and touches no
  process group. Under `torchrun` or `accelerate launch` (WORLD_SIZE > 1) Accelerate's `PartialState`
  joins the process group (gloo for `--device cpu`, NCCL on GPUs) and gives the rank, the number of
  processes and the device (`--device cuda` becomes `cuda:<local rank>`).
- Sharding (`shard_bounds`): each process takes a contiguous block of the batch list, the split of
  Accelerate's `split_between_processes` without padding: uneven lists give the first processes one
  batch more, more processes than batches leave the last ones idle. No batch is padded, repeated or
  dropped, so no image is processed twice.
- Running (`run_shard`): a torch DataLoader decodes and resizes the images of the process's batches in
  worker processes (`workers`; `siad.image.prepare_image`) while the model runs on the previous batch;
  the tool's work function turns each batch into a result that a `BatchStore` keeps: on disk
  (`DiskStore`, one file per batch written atomically, temporary file and rename, under the output
  folder) so that a rerun with `resume=True` skips the batches already done, or in memory
  (`MemoryStore`, for API calls). Rank 0 shows one progress bar (images/s and ETA of its shard); a
  batch that fails is logged with the rank and the files.
- Agreeing (`check_failures`): before anything is collected every process says whether its shard
  failed, so that a failure on one rank stops every rank with the message instead of a hang.
- Collecting (`collect`): rank 0 receives every batch's result in the order of the batch list, one
  batch at a time, point to point (no shared file system needed; with NCCL through a gloo group, in
  host memory); the tool merges them exactly (image scores in order, `siad.metrics.PixelState.merge`
  for the pixel metrics, CSV rows in order).

The stores of finished batches are `siad.run_store`, the command-line options the tools share
`siad.run_options` (their names are re-exported here).

Nothing here runs at import time; torch, Accelerate and torch.distributed are imported when used.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from tqdm.auto import tqdm

from siad.config import SIADConfig
from siad.image import PreparedImage, load_rgb, prepare_image
from siad.run_options import (add_run_arguments, check_output_folder, device_argument,  # noqa: F401 (re-exported)
                              device_problem)
from siad.run_store import (RESUME_FOLDER, BatchStore, DiskStore, MemoryStore, atomic_write,  # noqa: F401 (re-exported)
                            file_identity, from_json_array, json_array, run_folder)

Payload = TypeVar("Payload")
Result = TypeVar("Result")

# How long a process waits in a collective for the others: shards end at different times (a slow class,
# a reference bank), and rank 0 merges class by class while the others wait to send.
COLLECTIVE_TIMEOUT = timedelta(hours=12)
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


# ------------------------------------------------------------------------------------ processes
@dataclass(frozen=True)
class Processes:
    """This process in the run: `rank` of `world` processes (`local_rank` on its machine), and the
    torch device it uses."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"
    local_rank: int = 0
    # the torch.distributed group that carries results and messages (host objects): None is the default
    # group (gloo on the CPU); with NCCL, a gloo group over the same processes, so that results travel
    # through host memory and TCP, not through GPU memory
    group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """"rank 1/8", for messages."""
        return f"rank {self.rank}/{self.world}"


def launched_world_size() -> int:
    """The number of processes a launcher (torchrun, accelerate launch, mpirun) started, from its
    environment; 1 for a plain `python` command."""
    for name in _WORLD_SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return int(value)
    return 1


def start_processes(device: str = "cpu") -> Processes:
    """This process's rank, the number of processes and its device.

    One process (no launcher): `Processes(0, 1, device)`, nothing initialised. Launched with several
    processes: Accelerate's `PartialState` initialises torch.distributed (gloo when `device` is "cpu",
    else the accelerator's backend, e.g. NCCL) and "cuda" becomes this process's GPU
    (`cuda:<local rank>`); any other device is used as given. Call it once per process (with NCCL it
    makes the gloo group that carries the results: a collective call)."""
    world = launched_world_size()
    if world <= 1:
        return Processes(device=device)
    from accelerate import PartialState  # deferred: torch (siad predict --onnx runs the runner without it)

    state = PartialState(cpu=device == "cpu", timeout=COLLECTIVE_TIMEOUT)
    if state.num_processes != world:
        raise ValueError(f"the launcher started {world} processes but Accelerate sees {state.num_processes} "
                         f"({state.distributed_type}): with --device {device} on this machine each process would "
                         "run everything alone (no GPU here? give --device cpu)")
    resolved = str(state.device) if device == "cuda" else device
    group = None
    if state.backend != "gloo":
        import torch.distributed as dist  # deferred: torch (siad predict --onnx runs the runner without it)

        group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
    return Processes(rank=state.process_index, world=state.num_processes, device=resolved,
                     local_rank=state.local_process_index, group=group)


def in_turns(processes: Processes, action: Callable[[], Result]) -> Result:
    """`action()` on every process, rank 0 first, then the first process of each other machine, then the
    rest: what rank 0 writes into a cache (tiled KolektorSDD) the others reuse on a shared file system,
    and on a machine of its own the first process writes it for the others there."""
    turn = 0 if processes.is_main else (1 if processes.local_rank == 0 else 2)
    result: Result | None = None
    for step in range(3 if processes.world > 1 else 1):
        if step == turn:
            result = action()
        barrier(processes)
    return result  # type: ignore[return-value]


def barrier(processes: Processes) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if processes.world > 1:
        import torch.distributed as dist  # deferred: torch (siad predict --onnx runs the runner without it)

        dist.barrier(group=processes.group)


# ------------------------------------------------------------------------------------ batches and shards
@dataclass(frozen=True)
class Batch:
    """Items [start, stop) of a run's item list, all of one group; `index`: its place in the batch list."""

    index: int
    group: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_batches(groups: Sequence[tuple[str, int]], batch_size: int) -> list[Batch]:
    """The batches of items laid out group after group (`groups`: (name, number of items) in order):
    each group cut into batches of `batch_size` (its last batch may be smaller), never across groups."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    batches: list[Batch] = []
    offset = 0
    for name, count in groups:
        for start in range(offset, offset + count, batch_size):
            batches.append(Batch(index=len(batches), group=name, start=start, stop=min(start + batch_size,
                                                                                         offset + count)))
        offset += count
    return batches


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of the `count` batches that process `rank` of `world` runs: contiguous blocks, the
    first `count % world` processes one batch more (Accelerate's `split_between_processes`, unpadded)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    per_process, extras = divmod(count, world)
    start = rank * per_process + min(rank, extras)
    return start, start + per_process + (1 if rank < extras else 0)


def owner_of(position: int, count: int, world: int) -> int:
    """The rank whose shard holds position `position` of `count` batches."""
    per_process, extras = divmod(count, world)
    boundary = extras * (per_process + 1)  # the first `extras` ranks hold per_process + 1 each
    if position < boundary:
        return position // (per_process + 1)
    return extras + (position - boundary) // per_process


def shard(batches: Sequence[Batch], processes: Processes) -> list[Batch]:
    """This process's batches (`shard_bounds`)."""
    start, stop = shard_bounds(len(batches), processes.rank, processes.world)
    return list(batches[start:stop])


@dataclass(frozen=True)
class RunOptions:
    """How a tool runs its batches: `processes` (`start_processes`), DataLoader `workers` (0: images
    are loaded in this process), `folder` under which finished batches are kept on disk for resuming
    (None: in memory), `resume` (skip the batches kept by an interrupted run with the same
    description), and `threads` (the workers are threads, not DataLoader processes: no torch)."""

    processes: Processes = Processes()
    workers: int = 0
    folder: Path | None = None
    resume: bool = False
    threads: bool = False

    def store(self, tool: str, description: Mapping[str, Any], encode: Callable[[Payload], dict[str, np.ndarray]],
              decode: Callable[[Mapping[str, np.ndarray]], Payload]) -> "BatchStore[Payload]":
        """The store of one run: a `DiskStore` in `run_folder(folder, tool, description)`, or in memory."""
        if self.folder is None:
            return MemoryStore()
        return DiskStore(run_folder(self.folder, tool, description), encode, decode)


# ------------------------------------------------------------------------------------ loading
@dataclass(frozen=True)
class BatchItem:
    """One image of a batch as the DataLoader gives it: `image` (None when it could not be read, then
    `error` says why) and, for overlays, `rgb`, the decoded image its maps come back at."""

    index: int
    path: str
    image: PreparedImage | None
    rgb: np.ndarray | None = None
    error: str | None = None


class ImageFiles:
    """A map-style dataset of image files for a torch DataLoader: item i is the `BatchItem` of
    `paths[i]` (`siad.image.prepare_image` with `config`). `for_overlays`: keep the decoded RGB image
    and bring the maps back at its size (what `siad.predict` draws on); otherwise at the original size."""

    def __init__(self, paths: Sequence[str | os.PathLike], config: SIADConfig, for_overlays: bool = False) -> None:
        self.paths = [str(p) for p in paths]
        self.config = config
        self.for_overlays = for_overlays

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> BatchItem:
        path = self.paths[index]
        try:
            if not self.for_overlays:
                return BatchItem(index=index, path=path, image=prepare_image(path, self.config))
            rgb = load_rgb(path, self.config.vision.max_input_side, self.config.vision.max_input_pixels).rgb
            prepared = dataclasses.replace(prepare_image(rgb, self.config), source=path)
            return BatchItem(index=index, path=path, image=prepared, rgb=rgb)
        except (ValueError, OSError) as error:
            return BatchItem(index=index, path=path, image=None, error=str(error))


def _as_list(items: list[BatchItem]) -> list[BatchItem]:
    return list(items)


def batch_loader(dataset: ImageFiles, batches: Sequence[Batch], workers: int,
                 threads: bool = False) -> Iterator[list[BatchItem]]:
    """The items of `batches`, batch by batch in order, loaded by `workers` DataLoader worker processes
    that run ahead of the consumer by up to two batches each; threads=True: by a pool of `workers`
    threads instead (no torch: what the ONNX runtime uses; Pillow and onnxruntime release the GIL);
    workers=0: in this process, as the consumer asks."""
    index_lists = [list(range(b.start, b.stop)) for b in batches]
    if not index_lists:
        return iter(())
    if workers == 0:
        return ([dataset[i] for i in indices] for indices in index_lists)
    if threads:
        return _threaded_batches(dataset, index_lists, workers)
    from torch.utils.data import DataLoader  # deferred: torch (siad predict --onnx runs the runner without it)

    loader = DataLoader(dataset, batch_sampler=index_lists, collate_fn=_as_list, num_workers=workers,
                        prefetch_factor=2)
    return iter(loader)


def _threaded_batches(dataset: ImageFiles, index_lists: list[list[int]], workers: int) -> Iterator[list[BatchItem]]:
    """`batch_loader` with threads: up to two batches per thread loading ahead, in order."""
    ahead = 2 * workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="siad-load") as pool:
        pending: deque = deque()
        try:
            for indices in index_lists:
                pending.append([pool.submit(dataset.__getitem__, i) for i in indices])
                if len(pending) > ahead:
                    yield [future.result() for future in pending.popleft()]
            while pending:
                yield [future.result() for future in pending.popleft()]
        finally:
            for futures in pending:
                for future in futures:
                    future.cancel()


# ------------------------------------------------------------------------------------ running
@dataclass
class ShardReport:
    """What one process did: batches (and images) run and resumed, and the failure that stopped it."""

    ran: list[int] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0
    failure: str | None = None


class RunFailed(RuntimeError):
    """A process of the run failed; the message names the rank and the files."""


def log(processes: Processes, message: str) -> None:
    """A line on stderr naming the rank when there are several processes."""
    prefix = f"siad [{processes.label}]" if processes.world > 1 else "siad"
    print(f"{prefix}: {message}", file=sys.stderr, flush=True)


def run_shard(batches: Sequence[Batch], paths: Sequence[str | os.PathLike],
              work: Callable[[Batch, list[BatchItem]], Payload], store: BatchStore[Payload], processes: Processes,
              *, config: SIADConfig, workers: int = 0, resume: bool = False, for_overlays: bool = False,
              progress: bool = True, title: str = "run", threads: bool = False,
              each: Callable[[Batch, Payload], None] | None = None) -> ShardReport:
    """Run this process's shard of `batches` (over the images `paths`): `work(batch, items)` per batch,
    its result saved in `store`. With `resume`, batches whose result the store has are skipped (and
    loaded for `each`). `each(batch, result)` is called for every batch of the shard in order.

    An exception in a batch is logged (rank, batch, files) and stops the shard: the returned report's
    `failure` holds the message; give it to `check_failures`. KeyboardInterrupt and the like propagate."""
    mine = shard(batches, processes)
    done = [b for b in mine if resume and store.has(b.index)]
    done_indices = {b.index for b in done}
    todo = [b for b in mine if b.index not in done_indices]
    report = ShardReport(resumed=[b.index for b in done])
    total = sum(b.size for b in mine)
    where = f" [{processes.label}: {total} of {sum(b.size for b in batches)} images]" if processes.world > 1 else ""
    bar = tqdm(total=total, initial=sum(b.size for b in done), desc=title + where, unit="img", file=sys.stderr,
               disable=not (progress and processes.is_main), dynamic_ncols=True)
    if done:
        log(processes, f"{title}: resuming, {len(done)} of {len(mine)} batches of this process already done")
    start = time.perf_counter()
    loaded = batch_loader(ImageFiles(paths, config, for_overlays), todo, workers, threads)
    current: Batch | None = None
    try:
        for batch in mine:
            current = batch
            if batch.index in done_indices:
                if each is not None:
                    each(batch, store.load(batch.index))
                continue
            bar.set_postfix_str(batch.group, refresh=False)
            result = work(batch, next(loaded))
            store.save(batch.index, result)
            report.ran.append(batch.index)
            report.images += batch.size
            if each is not None:
                each(batch, result)
            bar.update(batch.size)
    except Exception as error:  # noqa: BLE001 - reported with the rank and the files, then agreed on
        report.failure = _failure_message(processes, current, paths, error)
        log(processes, report.failure)
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
    if processes.world > 1 or done:
        log(processes, f"{title}: ran {len(report.ran)} batches ({report.images} images) in {report.seconds:.1f} s"
                       f"{_ranges(report.ran)}, resumed {len(report.resumed)}{_ranges(report.resumed)}")
    return report


def _failure_message(processes: Processes, batch: Batch | None, paths: Sequence[str | os.PathLike],
                     error: Exception) -> str:
    where = "before its first batch" if batch is None else (
        f"on batch {batch.index} ({batch.group}: {', '.join(str(paths[i]) for i in range(batch.start, batch.stop))})")
    return f"{processes.label} failed {where}: {type(error).__name__}: {error}"


def _ranges(indices: list[int]) -> str:
    """" [batches 0-3, 7]" for messages ("" when empty)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts = [str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    return f" [batches {', '.join(parts)}]" if parts else ""


def check_failures(failure: str | None, processes: Processes) -> None:
    """Every process gives its failure (or None); if any failed, every process raises `RunFailed` with
    all the messages (with one process: raise its own)."""
    failures = [failure]
    if processes.world > 1:
        import torch.distributed as dist  # deferred: torch (siad predict --onnx runs the runner without it)

        gathered: list[str | None] = [None] * processes.world
        dist.all_gather_object(gathered, failure, group=processes.group)
        failures = gathered
    messages = [f for f in failures if f]
    if messages:
        raise RunFailed("; ".join(messages))


def collect(batches: Sequence[Batch], total: int, load: Callable[[Batch], Payload],
            processes: Processes) -> Iterator[tuple[Batch, Payload]]:
    """Every batch of `batches` (a part of a batch list of `total` batches, in order) with its result,
    on rank 0, in order: its own from `load`, the others' received from their owner (`owner_of`), one
    at a time. The other ranks send the results of their batches and yield nothing. Every process must
    iterate it to the end with the same `batches`."""
    for batch in batches:
        owner = owner_of(batch.index, total, processes.world)
        if processes.is_main:
            yield batch, (load(batch) if owner == 0 else _receive(owner, processes))
        elif processes.rank == owner:
            _send(load(batch), processes)


def _send(payload: Any, processes: Processes) -> None:
    import torch.distributed as dist  # deferred: torch (siad predict --onnx runs the runner without it)

    dist.send_object_list([payload], dst=0, group=processes.group)


def _receive(source: int, processes: Processes) -> Any:
    import torch.distributed as dist  # deferred: torch (siad predict --onnx runs the runner without it)

    box: list[Any] = [None]
    dist.recv_object_list(box, src=source, group=processes.group)
    return box[0]
