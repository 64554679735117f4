"""Classify image files with converted weights or a training workdir; print the top classes.

  efficientnet-predict --weights=weights/b0 cat.jpg dog.png
  efficientnet-predict --weights=runs/demo --top_k=3 digit.png

Each image is center-cropped, resized (bicubic) and normalised as recorded with the
weights. ImageNet weights (1000 classes) print synset ids, with readable names when timm is
installed; other weights print class indices.
"""

from __future__ import annotations


import gc

from absl import app, flags

from efficientnet_jax import compilation_cache, terminal

_WEIGHTS = flags.DEFINE_string("weights", None,
                               "Converted-weights directory or training workdir.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes to print per image.")
_VERBOSE = flags.DEFINE_bool("verbose", False, terminal.VERBOSE_HELP)
flags.mark_flag_as_required("weights")


def main(argv):
  images = argv[1:]
  if not images:
    raise app.UsageError("usage: efficientnet-predict --weights=DIR IMAGE [IMAGE ...]")
  if not _VERBOSE.value:
    terminal.quiet_output()
  # The garbage collector, run over the objects TensorFlow's and JAX's imports create,
  # costs a second of start-up: off while importing, those objects frozen after.
  gc.disable()
  with terminal.native_stderr_into_log():
    from efficientnet_jax import inference
    from efficientnet_jax.data import tf_devices
    tf_devices.hide_accelerators_from_tf()  # TF decodes and resizes; JAX classifies
  gc.freeze()
  gc.enable()
  compilation_cache.enable()  # the predict step of these weights compiles once
  for image, predictions in zip(images, inference.predict(images, _WEIGHTS.value,
                                                          _TOP_K.value)):
    print(image)
    for p in predictions:
      print(f"  {p.probability:7.4f}  {p.index:4d}  {p.label}")


if __name__ == "__main__":
  app.run(main)
