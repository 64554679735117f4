"""Fine-tune pretrained weights on another dataset (transfer learning, paper Section 5.2).

  python -m efficientnet_jax.main \
      --config=configs/finetune.py:dataset=cifar10,weights=weights/b0 --workdir=runs/ft_cifar10
  # Offline demo: the demo workdir's weights onto the even digits (5 classes).
  python -m efficientnet_jax.main \
      --config=configs/finetune.py:dataset=digits_even,weights=runs/demo --workdir=runs/ft_even

The argument is `dataset=NAME[,weights=PATH][,variant=bN]`. `weights` is a converted-weights
directory (efficientnet-convert) or a training workdir; the model size, padding, BN
epsilon, resolution and preprocessing are taken from it (a `variant` that disagrees is an
error), and a new classifier sized for the dataset replaces the old one. Without weights
the same recipe trains from scratch.

Transfer datasets of the paper (Table 5) by tfds name, with the splits used here:
cifar10, cifar100 (train/test), oxford_flowers102 (train+validation/test),
oxford_iiit_pet (train/test), cars196 (Stanford Cars; train/test), food101
(train/validation). FGVC Aircraft and Birdsnap are not in tfds. Any other tfds image
classification dataset works with train/test splits, or pass
--config.train_split/--config.eval_split.

Freezing, off by default: `--config.finetune.freeze_backbone_epochs=1` trains only the new
classifier for the first epoch (the backbone's optimizer and schedule start when it
thaws; a value >= num_epochs is a linear probe), `--config.finetune.freeze_bn=True`
normalises with the pretrained BN statistics throughout and never updates them.

Expected: the offline digits_even command above reaches 99.4% test top-1 (177 of the 178
even test digits, measured from a `make demo` workdir at 98.6%); for the tfds datasets
nothing was run here.

Recipe (the paper gives none; this is a common transfer setting, not tuned here): SGD
with momentum 0.9 at 0.01 per 256 images, 1 warmup epoch, cosine decay to 0 over 20 epochs,
batch 256, label smoothing 0.1, L2 1e-5, EMA decay 0.999 (runs are short), drop path 0.2
and the variant's dropout. The digits datasets use the demo's settings instead.
"""

from __future__ import annotations

import ml_collections

from efficientnet_jax.config import defaults

# tfds name → (train split, eval split).
TRANSFER_DATASETS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "oxford_flowers102": ("train+validation", "test"),
    "oxford_iiit_pet": ("train", "test"),
    "cars196": ("train", "test"),
    "food101": ("train", "validation"),
    "digits": ("train", "test"),
    "digits_even": ("train", "test"),
}
_KEYS = ("dataset", "weights", "variant")


def get_config(arg: str = "dataset=cifar10") -> ml_collections.ConfigDict:
  options = _parse(arg)
  config = defaults.get_config()
  weights, variant = options.get("weights"), options.get("variant")
  if weights:
    from efficientnet_jax import inference  # reads model.json or config.json + metadata
    info = inference.read_info(weights)
    if variant and variant != info.variant:
      raise ValueError(f"config argument variant={variant!r} contradicts the weights in "
                       f"{weights}, which are {info.variant!r}")
    info.update_config(config)
    config.init_from = weights
  else:
    config.model.variant = variant or "b0"
  config.model.num_classes = None  # the dataset's: a new classifier

  config.dataset = options.get("dataset", "cifar10")
  config.train_split, config.eval_split = TRANSFER_DATASETS.get(config.dataset,
                                                                ("train", "test"))
  config.batch_size = 256
  config.num_epochs = 20.0
  config.optimizer.name = "sgd"
  config.optimizer.base_learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.schedule.name = "cosine"
  config.schedule.warmup_epochs = 1.0
  config.ema_decay = 0.999
  config.eval_every_epochs = 1.0
  if config.dataset.startswith("digits"):  # the offline demo: small images, not mirrorable
    config.batch_size = 64
    config.num_epochs = 10.0
    config.input.random_flip = False
    config.input.crop_area_range = (0.5, 1.0)
    config.input.shuffle_buffer = 2048
    config.ema_decay = 0.99
    config.eval_every_epochs = 5.0
    config.log_every_steps = 50
  return config


def _parse(arg: str) -> dict[str, str]:
  options = {}
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in _KEYS or not value:
      raise ValueError(f"config argument {arg!r}: expected dataset=NAME[,weights=PATH]"
                       f"[,variant=bN], got {item!r}")
    options[key] = value.strip()
  return options
