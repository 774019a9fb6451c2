"""Pictures of anomaly maps and evaluation results: the one place for the jet overlay and the plots.

- `jet_table()`: the "jet" colour map (OpenCV's `COLORMAP_JET`) as a 256 x 3 RGB lookup table: the one
  place of the overlay's colours, for the overlays, the maps and the app's colour bar.
- `overlay(image, anomaly_map, alpha=0.5)`: the map in jet blended over the image (what `siad detect
  --out` and `siad predict` write and what the app shows); numpy and OpenCV only, no matplotlib.
- `colorize(anomaly_map)`: the map alone in jet, as an RGB uint8 picture.
- `fit_map(anomaly_map, height, width)`: a map at a picture's size (area averaging when shrinking).
- `overlay_with_scale(image, anomaly_map, title=...)`: the overlay with a colour bar and a title,
  as an RGB uint8 picture (the app's main view).
- `roc_curve(labels, scores)`: the ROC points (one per distinct score) for plotting.
- `plot_roc`, `plot_qualitative`, `plot_histograms`: the figures of `python -m siad.evaluate`
  (ROC curves of a class, the grid of the paper's Fig. 4, score histograms), written as PNG.

Maps are read on an absolute scale: 0 is blue, 1 is red, whatever the image (no per-image
stretching), so that colours can be compared between images. Only the figures need matplotlib
(`pip install "siad-llm[plots]"`): `overlay_with_scale` and the plots, drawn with
`matplotlib.figure.Figure` and the Agg canvas: no pyplot, no global state, no display needed.
Every title, label and legend entry built from user text (class names, captions, curve names) is
drawn literally (`parse_math=False`): a `$` in a class name is a dollar sign, never mathtext.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import cv2
import numpy as np

from siad.metrics import image_auroc

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.legend import Legend

__all__ = ["jet_table", "fit_map", "overlay", "colorize", "overlay_with_scale", "roc_curve", "RocCurve", "QualitativeRow",
           "plot_roc", "plot_qualitative", "plot_histograms"]


@functools.cache
def jet_table() -> np.ndarray:
    """The "jet" colour map as a read-only 256 x 3 uint8 RGB lookup table: OpenCV's `COLORMAP_JET`
    (MATLAB's jet: dark blue, blue, cyan, yellow, red, dark red; within 34 levels of matplotlib's
    "jet" in every entry), so that overlays need no matplotlib."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(1, 256), cv2.COLORMAP_JET)[0]
    table = np.ascontiguousarray(bgr[:, ::-1])
    table.flags.writeable = False
    return table


def fit_map(anomaly_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """An H x W float map at height x width for display: unchanged when it already is; pixel-area
    averaging when it shrinks (a full-size map over a downscaled upload), else bilinear."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.shape == (height, width):
        return values
    shrinks = height <= values.shape[0] and width <= values.shape[1]
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)


def colorize(anomaly_map: np.ndarray) -> np.ndarray:
    """An H x W map with values in [0, 1] (clipped) -> H x W x 3 uint8 RGB in the "jet" colour map."""
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"an anomaly map must be H x W, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("the anomaly map holds NaN or infinite values")
    index = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return jet_table()[index]


def overlay(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The jet-coloured map blended over the image: (1 - alpha) * image + alpha * jet(map).

    image: H x W x 3 uint8 RGB (H x W grey is accepted); anomaly_map: values in [0, 1], brought to
    the image's size by `fit_map` when it differs. Returns H x W x 3 uint8 RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = np.asarray(image)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"the image must be H x W x 3 uint8 RGB, got shape {rgb.shape} and dtype {rgb.dtype}")
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"an anomaly map must be H x W, got shape {values.shape}")
    values = fit_map(values, rgb.shape[0], rgb.shape[1])
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colorize(values).astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def overlay_with_scale(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5, title: str | None = None,
                       max_side_px: int = 800) -> np.ndarray:
    """`overlay(image, anomaly_map, alpha)` drawn with a jet colour bar (0 to 1) and an optional
    title, as an RGB uint8 picture (for the app). The picture's longer side is at most about
    `max_side_px` pixels plus the colour bar; the image keeps its aspect ratio."""
    # deferred: matplotlib is the optional [plots] extra (overlays need only OpenCV)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable  # (the same extra)
    from matplotlib.colors import ListedColormap, Normalize  # (the same extra)

    blended = overlay(image, anomaly_map, alpha)
    height, width = blended.shape[:2]
    scale = min(1.0, max_side_px / max(height, width)) / 100.0  # inches at 100 dpi
    fig = _figure(max(2.5, width * scale + 1.1), max(2.0, height * scale + (0.45 if title else 0.15)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(blended)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10, parse_math=False)
    jet = ListedColormap(jet_table() / 255.0, name="jet")  # the bar in the overlay's own colours
    fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=jet), ax=ax, fraction=0.05, pad=0.02,
                 label="anomaly score")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()


# --------------------------------------------------------------------------------------- ROC
@dataclass(frozen=True)
class RocCurve:
    """ROC points for plotting: false- and true-positive rates from (0, 0) to (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray


def roc_curve(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> RocCurve:
    """The ROC curve of `scores` for binary `labels`: one point per distinct score (prediction
    `score >= t`), starting at (0, 0). Raises ValueError unless both classes are present."""
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise ValueError("labels and scores must be non-empty and of the same length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("a ROC curve needs both normal and anomalous samples")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_run = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)
    true_pos = np.cumsum(y)[last_of_run]
    false_pos = (last_of_run + 1) - true_pos
    return RocCurve(fpr=np.concatenate(([0.0], false_pos / n_neg)), tpr=np.concatenate(([0.0], true_pos / n_pos)))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # deferred: matplotlib is the optional [plots] extra

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _literal_legend(legend: "Legend") -> None:
    """Draw a legend's entries as plain text (they may hold user text such as a class name)."""
    for text in legend.get_texts():
        text.set_parse_math(False)


def plot_roc(path: str | Path, title: str, curves: Mapping[str, tuple[Sequence[int], Sequence[float]]]) -> Path:
    """ROC curves of one class, one line per entry of `curves` (name -> (labels, scores)), the
    AUROC in the legend. Entries whose labels hold one class only are left out."""
    fig = _figure(4.6, 4.4)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
    lines, entries = [], []
    for name, (labels, scores) in curves.items():
        try:
            curve = roc_curve(labels, scores)
        except ValueError:
            continue
        lines += ax.plot(curve.fpr, curve.tpr, linewidth=1.8)
        entries.append(f"{name} (AUROC {100 * image_auroc(labels, scores):.1f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false-positive rate", ylabel="true-positive rate")
    ax.set_title(title, parse_math=False)
    if lines:  # explicit entries: a name starting with "_" is not dropped as a private label
        _literal_legend(ax.legend(lines, entries, loc="lower right", fontsize=8))
    else:
        ax.text(0.5, 0.5, "undefined: one class only", ha="center", va="center")
    path = Path(path)
    fig.savefig(path)
    return path


# ------------------------------------------------------------------------------- qualitative
@dataclass
class QualitativeRow:
    """One row of the qualitative grid: the image (H x W x 3 uint8), its ground truth (H x W bool,
    or None) and one or more maps (name -> H x W float in [0, 1]), with a caption."""

    caption: str
    image: np.ndarray
    mask: np.ndarray | None
    maps: dict[str, np.ndarray]


def plot_qualitative(path: str | Path, rows: Sequence[QualitativeRow], alpha: float = 0.5) -> Path:
    """A grid like the paper's Fig. 4: per row the image, the ground truth and each map (overlaid
    on the image in jet, on the same absolute scale). Raises ValueError for no rows."""
    if not rows:
        raise ValueError("no rows to draw")
    map_names = list(dict.fromkeys(name for row in rows for name in row.maps))
    columns = ["image", "ground truth", *map_names]
    fig = _figure(2.1 * len(columns), 2.2 * len(rows))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for r, row in enumerate(rows):
        pictures: list[np.ndarray | None] = [row.image, None if row.mask is None else row.mask.astype(np.uint8) * 255]
        pictures += [overlay(row.image, row.maps[name], alpha) if name in row.maps else None for name in map_names]
        for c, picture in enumerate(pictures):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if picture is None:
                ax.text(0.5, 0.5, "-", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            if r == 0:
                ax.set_title(columns[c], fontsize=9, parse_math=False)
        axes[r][0].set_ylabel(row.caption, fontsize=7, parse_math=False)
    path = Path(path)
    fig.savefig(path)
    return path


# -------------------------------------------------------------------------------- histograms
def plot_histograms(path: str | Path, groups: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                    bins: int = 30) -> Path:
    """Histograms of the image scores of normal and anomalous images, one panel per entry of
    `groups` (name -> (labels, scores)), on shared bins."""
    if not groups:
        raise ValueError("no scores to draw")
    fig = _figure(4.2 * len(groups), 3.4)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, (labels, scores)) in zip(axes, groups.items()):
        y = np.asarray(labels).astype(bool)
        s = np.asarray(scores, dtype=np.float64)
        low, high = (float(s.min()), float(s.max())) if s.size else (0.0, 1.0)
        if high - low < 1e-6:
            low, high = low - 0.01, high + 0.01
        edges = np.linspace(low, high, bins + 1)
        ax.hist(s[~y], bins=edges, alpha=0.6, color="tab:blue", label=f"normal ({int((~y).sum())})")
        ax.hist(s[y], bins=edges, alpha=0.6, color="tab:red", label=f"anomalous ({int(y.sum())})")
        ax.set(xlabel="image score", ylabel="images")
        ax.set_title(name, parse_math=False)
        _literal_legend(ax.legend(fontsize=8))
    path = Path(path)
    fig.savefig(path)
    return path
