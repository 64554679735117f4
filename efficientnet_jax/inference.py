"""Use trained weights: load them with their settings, classify images, evaluate a split.

Two kinds of weights directory work everywhere here:
* converted weights (`efficientnet-convert`, `weights.weights_directory`): the settings
  and preprocessing come from its `model.json`;
* a training workdir: the EMA weights of its latest checkpoint, the settings from the
  `config.json` it was started with.

  model, variables, info = efficientnet_jax.load("weights/b0")
  for index, label, probability in efficientnet_jax.predict("cat.jpg", "weights/b0")[0]:
    print(f"{probability:.3f} {label}")
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from efficientnet_jax import model_api
from efficientnet_jax.config import defaults
from efficientnet_jax.data import preprocessing
from efficientnet_jax.model_api import is_workdir, read_info  # noqa: F401  (public here too)
from efficientnet_jax.models import convnet
from efficientnet_jax.weights import weights_directory

Loaded = tuple[convnet.ConvNet, dict[str, Any], weights_directory.WeightsInfo]
Image = Union[str, os.PathLike, np.ndarray]


class Prediction(NamedTuple):
  index: int
  label: str
  probability: float


def load(path: str | os.PathLike[str], **model_overrides: Any) -> Loaded:
  """(model, {'params', 'batch_stats'}, info) of a weights directory or training workdir
  (`create_model(weights=path)`).

  `model_overrides` set `ConvNet` attributes such as dtype or depthwise_impl.
  """
  return tuple(model_api.create_model(weights=path, **model_overrides))


def preprocess(images: Image | Sequence[Image], info: weights_directory.WeightsInfo) -> np.ndarray:
  """Image files or uint8 arrays [H, W, 3] → the uint8 batch [N, R, R, 3] the weights
  expect: center crop and bicubic resize as recorded (normalisation happens in `predict`)."""
  import tensorflow as tf  # host-side decoding and resizing, like the input pipeline
  if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray)
                                                and images.ndim in (2, 3)):
    images = [images]
  batch = []
  for image in images:
    if isinstance(image, (str, os.PathLike)):
      if not os.path.isfile(image):
        raise ValueError(f"image file {os.fspath(image)!r} does not exist")
      decoded = tf.io.decode_image(tf.io.read_file(os.fspath(image)), expand_animations=False)
    else:
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image arrays must be uint8 [H, W] or [H, W, C] (0–255), got "
                         f"{image.dtype} {image.shape}")
      decoded = tf.constant(image if image.ndim == 3 else image[..., None])
    batch.append(preprocessing.eval_image(preprocessing.to_rgb(decoded), info.resolution,
                                          crop_padding=info.crop_padding,
                                          crop_fraction=info.crop_fraction).numpy())
  return np.stack(batch)


def predict(images: Image | Sequence[Image], weights: str | os.PathLike[str] | Loaded,
            top_k: int = 5) -> list[list[Prediction]]:
  """The `top_k` classes of each image, most probable first.

  Args:
    images: an image file (JPEG, PNG, GIF, BMP), a uint8 array [H, W, 3], or a list of them.
    weights: a weights directory or training workdir, or what `load` returned.
    top_k: how many classes to return per image.
  """
  model, variables, info = load(weights) if isinstance(weights, (str, os.PathLike)) \
      else weights
  if model.num_classes < 1:
    raise ValueError("these weights have no classifier (num_classes 0): nothing to predict")
  if top_k < 1:
    raise ValueError(f"top_k must be >= 1, got {top_k}")
  batch = preprocess(images, info)
  probabilities = np.asarray(_probabilities(model, tuple(info.mean_rgb),
                                            tuple(info.stddev_rgb))(variables, batch))
  names = class_names(model.num_classes)
  out = []
  for p in probabilities:
    order = np.argsort(-p, kind="stable")[:top_k]
    out.append([Prediction(int(i), names[i] if names else str(int(i)), float(p[i]))
                for i in order])
  return out


@functools.lru_cache(maxsize=8)
def _probabilities(model: convnet.ConvNet, mean_rgb: tuple[float, ...],
                   stddev_rgb: tuple[float, ...]):
  """A jitted uint8 batch → softmax probabilities, cached per model and normalisation."""
  def run(variables, images):
    logits = model.apply(variables, preprocessing.normalize(images, mean_rgb, stddev_rgb))
    return jax.nn.softmax(logits.astype(jnp.float32))
  return jax.jit(run)


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> list[str]:
  """ImageNet-1k labels in training order: tfds's synset ids (offline), with readable
  names when timm is installed ("n01440764 tench, Tinca tinca")."""
  import tensorflow_datasets as tfds
  names = list(tfds.builder("imagenet2012").info.features["label"].names)  # no data needed
  # timm ships a synset → names table. Read as a file: importing timm would load
  # torchvision → triton, which crashes a process that has loaded TensorFlow.
  spec = importlib.util.find_spec("timm")
  table = (os.path.join(os.path.dirname(spec.origin), "data", "_info",
                        "imagenet_synset_to_lemma.txt") if spec and spec.origin else "")
  if not os.path.isfile(table):
    return names
  with open(table) as f:
    lemmas = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
  return [f"{n} {lemmas[n]}" if n in lemmas else n for n in names]


def class_names(num_classes: int) -> list[str] | None:
  """ImageNet names for 1000 classes; None (print indices) otherwise."""
  return imagenet_class_names() if num_classes == 1000 else None


def eval_config(info: weights_directory.WeightsInfo, dataset: str, split: str,
                data_dir: str | None, batch_size: int) -> ml_collections.ConfigDict:
  """A config that evaluates these weights on `dataset`/`split` with their preprocessing."""
  config = defaults.get_config()
  info.update_config(config)
  config.model.num_classes = info.num_classes
  config.dataset = dataset
  config.train_split = config.eval_split = split  # nothing trains; the split must exist
  config.data_dir = data_dir
  config.batch_size = config.eval_batch_size = batch_size
  return config


def evaluate(weights: str | os.PathLike[str], dataset: str = "imagenet2012",
             split: str = "validation", data_dir: str | None = None,
             batch_size: int = 250) -> dict[str, float]:
  """Top-1, top-5 and loss of the weights over every example of `dataset`/`split`.

  TF reads the data: in a process whose JAX runs on a GPU or TPU, call
  `tf_devices.hide_accelerators_from_tf()` first (efficientnet-evaluate does).
  """
  from efficientnet_jax.config import validation  # TF and the evaluation code: lazily
  from efficientnet_jax.data import input_pipeline
  from efficientnet_jax.training import evaluator, sharding
  info = read_info(weights)
  config = eval_config(info, dataset, split, data_dir, batch_size)
  # Every config problem, before any weights are read.
  validation.validate(config)
  input_pipeline.validate(config)
  classes = input_pipeline.dataset_info(config).num_classes
  if classes != info.num_classes:
    raise ValueError(f"--dataset={dataset!r} has {classes} classes, the weights in "
                     f"{os.fspath(weights)} {info.num_classes}")
  model, variables, _ = load(weights)
  mesh = sharding.make_mesh()
  variables = jax.device_put(variables, sharding.replicated(mesh))
  return evaluator.Evaluator(model, config, mesh, info.resolution).evaluate(
      variables["params"], variables["batch_stats"])
