"""Evaluation like the paper's Table 1: per-class metrics and their mean, for both passes.

    python -m siad.evaluate --model M --dataset NAME --root DIR --out DIR [--classes C ...]
        [--map-only | --no-self-improve] [--eval-size 224] [--smooth-sigma 4] [--batch-size 8]
        [--shots K [--shot-seeds 0 1 2]]
        [--device cpu] [--dtype float32] [--qualitative 8] [--no-plots] [--quiet] [--workers 2] [--resume]
    torchrun --nproc_per_node N -m siad.evaluate ... --device cuda      (N processes: see "Scale" below)
    python -m siad.evaluate --protocol uzad --models mvtec=DIR1 visa=DIR2 br35h=DIR3 brainmri=DIR4 \\
        --datasets visa=ROOT mvtec=ROOT headct=ROOT ... --out DIR

Model (`--model`): a SIAD model folder or Hub id, or `zero-shot:<encoder>`, the WinCLIP-style
reference of `siad.baseline` (ImageBind + prompt ensemble, no training): `zero-shot:<SIAD model
folder or Hub id>` uses that model's ImageBind encoder, `zero-shot:<imagebind_huge.pth>` the
official weights, `zero-shot:tiny` the tiny random preset.

Dataset (`--dataset`): a registered dataset (`siad.data.registry`; `--help` lists them).

What is measured, per class of the test split (`load_dataset(NAME, ROOT, split)`), for each pass:

- pass 1: the image score S and map M of `detect` (`initial_score`, `initial_map`), answer R;
- pass 2 (self-improvement, Algorithm 1): S', M', R' (`score`, `anomaly_map`, `answer`).

The defaults are the paper's protocol: Algorithm 1 runs (both passes; the paper reports S', M'),
pixel metrics at each image's original resolution, no smoothing of the maps. The fast settings are
named options: `--map-only` (no LLM: pass 1 maps and scores), `--eval-size 224` (pixel metrics on
224 x 224 maps and masks), `--smooth-sigma 4` (Gaussian smoothing before scoring, as some zero-shot
repositories do; not the paper's).

Metrics (`siad.evaluation.metrics.METRICS`, computed by `siad.metrics`): image AUROC, AP and F1-max
from the image scores; pixel AUROC and AUPRO (FPR limit 0.3) from the maps, only for classes with
masks ("-" otherwise, e.g. the medical sets); the mean over classes (of the classes where a metric is defined). A class of one label (only
normal or only anomalous test images) has no image AUROC, AP or F1-max (without normal images AP and
F1-max would be 1 whatever the scores): they are reported as undefined, left out of the mean, and an
`UndefinedMetricWarning` and a note of the report name the class. Unless `--map-only`, also the
answer accuracy: `answer_is_anomalous(answer)` against the label, an answer that says neither yes
nor no counts as wrong (and is counted); and the answer-verdict agreement: the share of images whose
answer says "yes" exactly when the score of the same pass reaches the model's threshold (an answer that
says neither disagrees).

Passes: by default Algorithm 1 runs (both passes, both answers); `--no-self-improve` gives pass 1
with R; `--map-only` runs no LLM (`detect(chat=False)`): maps and scores of pass 1 only, since
self-improvement needs the LLM's answer R. The zero-shot baseline has no LLM: pass 1 only.

Settings: `--smooth-sigma` is the Gaussian sigma applied to the 224 x 224 map before scoring and
before the map goes back to the image size (default 0: none, as in the paper); it is passed to
`detect` for this run only (the model's config is never changed). Pixel metrics are computed at
each image's original resolution (default; exact, memory grows with the pixels of a class: about 5
bytes a pixel per pass), or at `--eval-size` x `--eval-size`: the map is resized bilinearly
(antialiased when shrinking) and the mask with nearest neighbours.

`--card` (with a local SIAD model folder) writes the measured means into that folder's model card:
its `model-index` and a results table (`siad.model_card.write_card_results`), filed under the dataset
(`--card-dataset ID`, needed for mvtec_format and meta; `--card-name` for display), replacing earlier
results for the same dataset and split. Nothing but measured results ever goes into a card's metadata.

Output in `--out` (required; files of the same names are replaced):

- `report.md`: the table (rows: classes and the mean; columns: the metrics of pass 1, then of pass
  2, then answer accuracies), in percent with one decimal, "-" where undefined, the gain of
  self-improvement on the mean, and notes;
- `report.json`: every number (fractions in [0, 1], null where undefined), the command, model,
  dataset, root, split and settings, per-class counts and answer statistics;
- `report.csv`: one row per class and pass and a "mean" row per pass: dataset, class, pass, shots,
  seed, n_images, n_normal, n_anomalous, image_auroc, pixel_auroc, aupro, image_ap, image_f1_max,
  answer_accuracy, answer_agreement, answers_neither (fractions, empty where undefined);
- `scores.csv`: one row per image: path, class, defect_type, label, score_pass1, score_pass2,
  answer_pass1, answer_pass2;
- plots: `roc_<class>.png` (image-level ROC of each pass), `qualitative.png` (image, ground truth,
  pass-1 map, pass-2 map for a few anomalous images, as in the paper's Fig. 4), `histograms.png`
  (image scores of normal and anomalous images, per pass).

Few-shot (`--shots K`, beyond the paper; `siad.references`): for each seed of `--shot-seeds` (default
0), K normal images of each test class are drawn from the same dataset's train split
(`load_dataset(NAME, ROOT, "train")`, normal images only, any test image left out: no test image is
ever a reference) with `siad.references.draw_references` (seeded by the seed and the class name), the
class's bank is built from them (`SIADModel.build_references`), and every test image of the class is
detected with it (both passes fuse their maps with the reference maps): the WinCLIP / AnomalyGPT
protocol. A class with fewer than K such normal images is an error before any work. Output: each seed's
complete report (the files above) in `<out>/seed_<seed>/`, with the references it drew in its
report.json; `<out>/report.{md,json,csv}` holds the mean over seeds (per class and the mean over
classes, both passes) and a table of each seed's mean; report.csv's `seed` column names the seed or
"mean". `--shots 0` (the default) is zero-shot: the report above, `shots` 0 and an empty `seed`. The
zero-shot baseline takes no references.

Scale (DESIGN 10, `siad.runner`): launched by `torchrun --nproc_per_node N -m siad.evaluate ...` or
`accelerate launch [--multi_gpu] --num_processes N [--config_file ...] -m siad.evaluate ...` (several
machines: the launcher's multi-node options), the N processes share the batches of each dataset (each
class cut into batches of `--batch-size`, the same batches as in one process; contiguous blocks of the
batch list per process, no image twice); Accelerate gives each its GPU (`--device cuda` becomes
`cuda:<local rank>`; `--device cpu`: gloo). Rank 0 gathers each class's results (the images' scores,
answers and labels in order, the `siad.metrics.PixelState` of the maps, merged exactly) and writes the
one report, whose numbers equal a one-process run's (`processes` in report.json says how many ran).
`--workers W` DataLoader worker processes per process read and resize the images while the model runs.
Every finished batch is kept in `<out>/.siad-resume/evaluate-<hash>/batch-<i>.npz` (written atomically:
scores, answers, the batch's pixel state, about 4 bytes a pixel per pass at the original resolution, and
its qualitative rows); a rerun with `--resume` and the same model files, data and settings skips them.
The folder is removed once the report is written.

`--protocol uzad` runs the paper's cross-dataset protocol: each test dataset is evaluated with the
checkpoint trained on its source dataset (`uzad_protocol()`, from the dataset registry: MVTec -> VisA,
MPDD, DTD, SDD, BTAD; VisA -> MVTec; Br35H -> BrainMRI, HeadCT; BrainMRI -> Br35H). `--models TRAIN=M ...` names the
checkpoints by training set (only those needed by the datasets given), or `--model M` uses one
model for every dataset (the zero-shot baseline). `--datasets NAME=ROOT ...` names the test sets.
Each dataset gets its own report in `<out>/<NAME>/`, and `<out>/report.{md,json,csv}` gathers the
mean rows (rows: datasets). Each checkpoint is loaded once.

The code (`siad.evaluation`; this module re-exports its public names and runs its command line):
`protocols` (zero-shot, k-shot and the cross-dataset protocol), `batches` (one batch and one class),
`metrics` (the registry of reported metrics), `results` (what an evaluation holds), `notes`,
`reports` (one renderer per format: report.md, report.json, report.csv; scores.csv and the figures),
`card` (`--card`) and `cli` (the arguments and the runs).
"""

from __future__ import annotations

import sys

from siad.evaluation.batches import EvalBatch, class_result, eval_mask, evaluate_batch, resize_map
from siad.evaluation.card import card_results, write_cards
from siad.evaluation.cli import Job, main, plan_jobs, run_jobs
from siad.evaluation.metrics import AUPRO_FPR_LIMIT, METRICS, Metric
from siad.evaluation.protocols import (combine_seeds, draw_class_references, evaluate_few_shot, evaluate_samples,
                                       passes_for, reference_pools, uzad_protocol)
from siad.evaluation.reports import (CSV_COLUMNS, REPORT_FORMATS, SCORE_COLUMNS, csv_rows, markdown_report, report_dict,
                                     safe_name, seed_folder, write_report, write_summary)
from siad.evaluation.results import (PASSES, AnswerStats, ClassResult, DatasetEvaluation, EvalSettings, ImageRecord,
                                     UndefinedMetricWarning, undefined_image_metrics, warn_undefined)

__all__ = ["AUPRO_FPR_LIMIT", "CSV_COLUMNS", "METRICS", "PASSES", "REPORT_FORMATS", "SCORE_COLUMNS", "AnswerStats",
           "ClassResult", "DatasetEvaluation", "EvalBatch", "EvalSettings", "ImageRecord", "Job", "Metric",
           "UndefinedMetricWarning", "card_results", "class_result", "combine_seeds", "csv_rows", "draw_class_references",
           "eval_mask", "evaluate_batch", "evaluate_few_shot", "evaluate_samples", "main", "markdown_report",
           "passes_for", "plan_jobs", "reference_pools", "report_dict", "resize_map", "run_jobs", "safe_name", "seed_folder",
           "undefined_image_metrics", "uzad_protocol", "warn_undefined", "write_cards", "write_report", "write_summary"]

if __name__ == "__main__":
    sys.exit(main())
