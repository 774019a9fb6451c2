"""Run a siad command-line module with every detected image recorded, for the distributed tests:

    python -m tests.dist_probe siad.evaluate ARGS...
    python -m torch.distributed.run --nproc_per_node 2 -m tests.dist_probe siad.predict ARGS...

Before the module runs as `__main__`, `SIADModel._detect_batch` is wrapped: after each batch, the source
path of every image it detected is appended, one line each, to `$SIAD_PROBE_DIR/rank<RANK>.txt`, then
the process sleeps `$SIAD_PROBE_DELAY` seconds (default 0: a run slow enough to be killed mid-way).
Everything else is the module's own code path.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path


def main() -> None:
    module, arguments = sys.argv[1], sys.argv[2:]
    folder = Path(os.environ["SIAD_PROBE_DIR"])
    delay = float(os.environ.get("SIAD_PROBE_DELAY", "0"))
    record = folder / f"rank{os.environ.get('RANK', '0')}.txt"

    from siad.model import SIADModel

    original = SIADModel._detect_batch

    def recording(self, images, *args, **kwargs):  # noqa: ANN001, ANN202 - the wrapped method's own signature
        results = original(self, images, *args, **kwargs)
        with record.open("a", encoding="utf-8") as handle:
            handle.writelines(f"{getattr(image, 'source', '') or type(image).__name__}\n" for image in images)
        time.sleep(delay)
        return results

    SIADModel._detect_batch = recording
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
