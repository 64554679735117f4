"""Draw the training curves of one or several runs (loss, accuracy, learning rate) from
their workdirs' metrics.jsonl into a PNG.

  efficientnet-plot runs/demo                          # runs/demo/curves.png
  efficientnet-plot runs/b0 runs/b1 --output=b0_b1.png --x_axis=epoch

Each run is named by its workdir and drawn in its own colour; train and eval curves differ
by line style. The files are read as they are: a run still training plots what it has
logged so far.
"""

from __future__ import annotations

import sys

from absl import app, flags
from etils import epath

from efficientnet_jax.research import training_curves

_OUTPUT = flags.DEFINE_string("output", None,
                              "PNG to write (default: <first workdir>/curves.png).")
_X_AXIS = flags.DEFINE_enum("x_axis", "step", list(training_curves.X_AXES),
                            "What the curves are drawn against.")


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("usage: efficientnet-plot WORKDIR [WORKDIR ...] [--output=PNG]")
  output = _OUTPUT.value or str(epath.Path(workdirs[0]) / "curves.png")
  try:
    training_curves.plot(workdirs, output, _X_AXIS.value)
  except ValueError as e:
    sys.exit(f"efficientnet-plot: {e}")
  print(f"wrote {output}")


if __name__ == "__main__":
  app.run(main)
