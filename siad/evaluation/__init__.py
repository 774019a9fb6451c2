"""Evaluation like the paper's Table 1, in parts (`siad.evaluate` is its command line and documents the
protocol and the files; it re-exports the public names):

- `protocols`: zero-shot (`evaluate_samples`), k-shot (`evaluate_few_shot`, `combine_seeds`) and the
  cross-dataset protocol (`uzad_protocol`, from the dataset registry);
- `batches`: one batch (detect, reduce the maps to pixel states) and one class's numbers;
- `metrics`: the registry of reported metrics (`METRICS`: name, title, level, direction);
- `results`: what an evaluation holds (settings, classes, records, answers);
- `notes`: the notes of a report;
- `reports`: one renderer per format (report.md, report.json, report.csv), scores.csv and the figures;
- `card`: the measured results in a model folder's card (`--card`);
- `cli`: the arguments, the runs they ask for, each model loaded once.
"""
