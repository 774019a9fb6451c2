"""SIAD-Synth's medical-like set: brain-like scans from scikit-image's Shepp-Logan phantom."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from siad.data.synth.common import _blob, _bundled_gray, _check_size, _erode, _fbm, _grid, _noise, _pick, _to_uint8

MEDICAL_CLASS = "brain"


def _phantom() -> np.ndarray:
    return _bundled_gray("phantom.png")


def make_scan(rng: np.random.Generator, size: int = 256, *, lesion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale brain-like scan (size x size uint8) made from scikit-image's Shepp-Logan phantom:
    random pose and elastic deformation, MRI-like tissue contrasts, folds, bias field and noise.

    With `lesion`, a lesion-like anomaly (a bright mass with a halo, sometimes a dark core, or a dark
    infarct-like area) lies inside the brain. Returns (scan, lesion mask bool; empty without lesion).
    The files hold labels only; the mask is for tests.
    """
    size = _check_size(size)
    base = _phantom()
    levels = np.rint(base * 10).astype(np.int8)  # 0, 1, 2, 3, 4, 10 (tenths of the phantom's levels)
    head = ndimage.binary_fill_holes(levels > 0)
    tissue = {0: rng.uniform(0.10, 0.2), 1: rng.uniform(0.30, 0.4), 2: rng.uniform(0.45, 0.55),
              3: rng.uniform(0.58, 0.68), 4: rng.uniform(0.7, 0.8), 10: rng.uniform(0.75, 0.95)}
    mri = np.zeros(base.shape, np.float32)
    for level, value in tissue.items():
        mri[levels == level] = value
    mri[~head] = 0.0
    brain = head & (levels != 10)
    matter = levels == 2  # the main brain tissue, where lesions go
    # pose, aspect and elastic deformation, onto the output grid
    n = base.shape[0]
    angle = rng.uniform(-12, 12)
    scale = size / n * rng.uniform(0.88, 1.0)
    matrix = cv2.getRotationMatrix2D((n / 2, n / 2), angle, scale)
    matrix[0, 0] *= rng.uniform(0.92, 1.05)
    matrix[0, 2] += size / 2 - n / 2 + rng.uniform(-0.03, 0.03) * size
    matrix[1, 2] += size / 2 - n / 2 + rng.uniform(-0.03, 0.03) * size
    inverse = cv2.invertAffineTransform(matrix)
    y, x = _grid(size)
    amplitude = 0.012 * size
    ex = x + amplitude * _noise(rng, (size, size), 4)
    ey = y + amplitude * _noise(rng, (size, size), 4)
    map_x = (inverse[0, 0] * ex + inverse[0, 1] * ey + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * ex + inverse[1, 1] * ey + inverse[1, 2]).astype(np.float32)
    image = cv2.remap(mri, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    brain_mask = cv2.remap(brain.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR) > 0.5
    parenchyma = brain_mask & (image > 0.4)
    matter_mask = cv2.remap(matter.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR) > 0.5
    # cortical folds: dark sulci along the zero lines of a fractal field, inside the brain
    folds = np.exp(-((_fbm(rng, (size, size), 9, 3) / 0.16) ** 2))
    image = image - 0.16 * folds * parenchyma + 0.025 * _noise(rng, (size, size), size // 6) * brain_mask
    mask = np.zeros((size, size), bool)
    if lesion:
        core = _erode(matter_mask, max(int(0.06 * size), 2))
        cy, cx = _pick(rng, core if core.any() else brain_mask)
        radius = rng.uniform(0.045, 0.11) * size
        shape_ = _blob(rng, (size, size), cy, cx, radius, irregularity=0.35)
        soft = cv2.GaussianBlur(shape_, (0, 0), 0.12 * radius + 0.5)
        texture = 1 + 0.15 * _noise(rng, (size, size), max(int(size / radius), 2) * 2)
        if rng.random() < 0.7:  # a bright mass with a faint halo, sometimes a dark necrotic core
            halo = cv2.GaussianBlur(shape_, (0, 0), 0.6 * radius) * 1.6
            image = image + 0.08 * np.clip(halo, 0, 1) + rng.uniform(0.25, 0.4) * soft * texture
            if rng.random() < 0.4:
                necrosis = _blob(rng, (size, size), cy, cx, 0.45 * radius, irregularity=0.3)
                image = image - 0.45 * cv2.GaussianBlur(necrosis, (0, 0), 1.0)
        else:  # a dark infarct-like area
            image = image - rng.uniform(0.22, 0.32) * soft * texture
        mask = shape_ > 0.5
    bias = 1 + 0.12 * _noise(rng, (size, size), 2)
    sigma = rng.uniform(0.015, 0.035)
    real = image * bias + rng.normal(0, sigma, image.shape)
    imaginary = rng.normal(0, sigma, image.shape)
    image = np.sqrt(real * real + imaginary * imaginary)  # Rician noise, as in magnitude MR images
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6)
    return _to_uint8(image * 255 * rng.uniform(0.9, 1.05)), mask
