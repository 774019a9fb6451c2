"""Build the tiny SIAD-LLM model (random weights) and run `detect` on an image made here.

Run: python examples/quickstart.py
"""

import numpy as np

from siad import SIADConfig, SIADModel


def main() -> None:
    model = SIADModel(SIADConfig.tiny())  # random weights: shows the API, not real detection
    rng = np.random.default_rng(0)
    image = np.full((240, 320, 3), 180, dtype=np.uint8)  # a plain grey part ...
    image[100:140, 200:260] = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)  # ... with a blemish
    result = model.detect([image], ["metal_nut"])[0]
    print(f"map {result.anomaly_map.shape} in [{result.anomaly_map.min():.3f}, {result.anomaly_map.max():.3f}]")
    print(f"score pass 1: {result.initial_score:.4f}  pass 2: {result.score:.4f}  anomalous: {result.is_anomalous}")
    print(f"answer pass 1: {result.initial_answer!r}")
    print(f"answer pass 2: {result.answer!r}")


if __name__ == "__main__":
    main()
