"""The Hugging Face model folder timm publishes: its `config.json` and which weights file.

timm's `save_for_hf`/`push_to_hf_hub` (timm/models/_hub.py, timm 1.0) write a folder with
`model.safetensors` and/or `pytorch_model.bin` and a `config.json` such as

  {"architecture": "tf_efficientnetv2_s", "num_classes": 1000, "num_features": 1280,
   "pretrained_cfg": {"tag": "in21k_ft_in1k", "input_size": [3, 300, 300],
                      "test_input_size": [3, 384, 384], "interpolation": "bicubic",
                      "crop_pct": 1.0, "crop_mode": "center", "mean": [0.5, 0.5, 0.5],
                      "std": [0.5, 0.5, 0.5], ...}}

(older exports put the `pretrained_cfg` keys at the top level: read the same way). A
snapshot folder of the Hugging Face cache has the same layout. The architecture name (with
its tag, "tf_efficientnetv2_s.in21k_ft_in1k") says how the network ran; the preprocessing
is timm's evaluation setting, at the test size when the config gives one (timm's
`resolve_data_config(use_test_size=True)`). Only reads files: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging

CONFIG_FILE = "config.json"
# The weights files timm looks for in a local folder, in its order of preference.
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth")


@dataclasses.dataclass(frozen=True)
class TimmFolder:
  """What a timm Hugging Face folder says about its weights."""

  weights_file: str
  config_file: str
  timm_name: str          # architecture[.tag], e.g. "efficientnet_b3.ra2_in1k"
  num_classes: int | None
  resolution: int | None        # evaluation size: test_input_size, else input_size
  train_resolution: int | None  # input_size (None: not square)
  crop_fraction: float    # test_crop_pct at the test size, else crop_pct
  mean_rgb: tuple[float, float, float]    # 0-255 scale
  stddev_rgb: tuple[float, float, float]


def has_config(folder: str | os.PathLike[str]) -> bool:
  """Whether `folder` holds a config.json (of any kind)."""
  return os.path.isfile(os.path.join(os.fspath(folder), CONFIG_FILE))


def read_timm_folder(folder: str | os.PathLike[str]) -> TimmFolder:
  """The weights file and settings of a timm Hugging Face folder.

  Raises:
    ValueError: an empty folder, no config.json, one that is not valid JSON or not
      timm's (no "architecture"), or no weights file. A size that is not square is
      returned as None: the caller asks for one.
  """
  folder = os.fspath(folder)
  config_file = os.path.join(folder, CONFIG_FILE)
  if not os.listdir(folder):
    raise ValueError(f"{folder} is an empty directory; timm weights are a .safetensors or "
                     f".pth file, or the Hugging Face folder timm writes ({CONFIG_FILE} and "
                     f"{' or '.join(WEIGHTS_FILES[:2])})")
  if not os.path.isfile(config_file):
    raise ValueError(f"{folder}: no {CONFIG_FILE} (a timm Hugging Face folder has one)")
  with open(config_file) as f:
    try:
      config = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # cut short, or not JSON
      raise ValueError(f"{config_file} is not valid JSON (truncated or damaged?): {e}"
                       ) from None
  if not isinstance(config, dict) or "architecture" not in config:
    raise ValueError(f"{config_file}: not a timm config (no \"architecture\")")
  # Older exports: one flat dict; newer: the preprocessing under "pretrained_cfg".
  pretrained = config.get("pretrained_cfg", config)
  weights = [os.path.join(folder, n) for n in WEIGHTS_FILES
             if os.path.isfile(os.path.join(folder, n))]
  if not weights:
    raise ValueError(f"{folder}: no weights file; looked for {', '.join(WEIGHTS_FILES)}")
  tag = pretrained.get("tag")
  name = config["architecture"] + (f".{tag}" if tag else "")
  train_size = _square(pretrained.get("input_size", (3, 224, 224)))
  test = pretrained.get("test_input_size")
  size = _square(test) if test else train_size
  crop = pretrained.get("test_crop_pct") if test else None
  crop = pretrained.get("crop_pct", 0.875) if crop is None else crop
  interpolation = pretrained.get("interpolation", "bicubic")
  if interpolation != "bicubic" or pretrained.get("crop_mode", "center") != "center":
    # Our evaluation resizes bicubically after a center crop; say what differs.
    logging.warning("%s: timm evaluates with %s interpolation, crop mode %s; the weights "
                    "directory records a bicubic center crop", config_file, interpolation,
                    pretrained.get("crop_mode", "center"))
  return TimmFolder(
      weights_file=weights[0], config_file=config_file, timm_name=name,
      num_classes=config.get("num_classes", pretrained.get("num_classes")),
      resolution=size, train_resolution=train_size, crop_fraction=float(crop),
      mean_rgb=_rgb(pretrained.get("mean", (0.485, 0.456, 0.406))),
      stddev_rgb=_rgb(pretrained.get("std", (0.229, 0.224, 0.225))))


def _square(input_size: list[int]) -> int | None:
  """The side of a timm (C, H, W) input size; None if not square (ours are)."""
  *_, height, width = input_size
  return int(height) if height == width else None


def _rgb(values: list[float]) -> tuple[float, float, float]:
  """timm's 0-1 mean or std → ours on the 0-255 scale."""
  r, g, b = (float(v) * 255 for v in values)
  return r, g, b
