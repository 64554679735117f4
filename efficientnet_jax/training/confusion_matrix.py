"""The confusion matrix of an evaluation, as TensorBoard shows it: a picture and a table.

The counts are summed on the device by the eval step (`evaluator.eval_step`) for datasets
of up to MAX_CLASSES classes; beyond that a picture has more cells than pixels to spare.
"""

from __future__ import annotations

import numpy as np

MAX_CLASSES = 100


def image(matrix: np.ndarray) -> np.ndarray:
  """uint8 RGB [H, W, 3]: rows (true class) normalised to fractions, counts written in
  the cells when there are at most 20 classes."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  matrix = np.asarray(matrix)
  num_classes = matrix.shape[0]
  fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  size = min(4 + 0.3 * num_classes, 16)
  figure = Figure(figsize=(size + 1, size), dpi=80)
  axes = figure.add_subplot()
  shown = axes.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
  figure.colorbar(shown, ax=axes, label="fraction of the true class")
  axes.set_xlabel("predicted class")
  axes.set_ylabel("true class")
  axes.set_title(f"{int(np.trace(matrix))}/{int(matrix.sum())} correct")
  if num_classes <= 20:
    axes.set_xticks(range(num_classes))
    axes.set_yticks(range(num_classes))
    for (row, column), count in np.ndenumerate(matrix):
      if count:
        axes.text(column, row, str(int(count)), ha="center", va="center", fontsize=8,
                  color="white" if fractions[row, column] > 0.5 else "black")
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def markdown(matrix: np.ndarray) -> str:
  """The counts as a Markdown table (TensorBoard's text tab renders it): a row per true
  class, a column per predicted class."""
  matrix = np.asarray(matrix).astype(int)
  classes = range(matrix.shape[0])
  lines = ["| true \\ predicted | " + " | ".join(map(str, classes)) + " |",
           "|---" * (matrix.shape[0] + 1) + "|"]
  lines += [f"| {c} | " + " | ".join(map(str, matrix[c])) + " |" for c in classes]
  return "\n".join(lines)
