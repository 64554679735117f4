"""Fixed-size vs progressive training on the embedded digits: the README's comparison.

  python -m efficientnet_jax.main --config=configs/demo_progressive.py:fixed --workdir=runs/fixed
  python -m efficientnet_jax.main --config=configs/demo_progressive.py:progressive \
      --workdir=runs/progressive

Both train a small EfficientNet (the demo's B0 at width and depth 0.25) for the same 6
epochs on digits upsampled to 64x64, with RandAugment (magnitude 6), dropout 0.1 and
evaluation at 64 px. "progressive" reaches those values in 4 stages of the released
schedule (training/progressive.py) from 32 px, RandAugment magnitude 1 and dropout 0: the
first stage computes on a quarter of the pixels. Add --config.seed=N for other seeds. No
published result: this is the offline stand-in for the paper's ImageNet comparison.
"""

import ml_collections

from efficientnet_jax.configs import demo


def get_config(arg: str = "progressive") -> ml_collections.ConfigDict:
  if arg not in ("fixed", "progressive"):
    raise ValueError(f"configs/demo_progressive.py:{arg}: expected 'fixed' or 'progressive'")
  config = demo.get_config()
  config.model.width = config.model.depth = 0.25
  config.model.resolution = 64
  config.input.augment = "randaugment"
  config.input.randaug_magnitude = 6
  config.batch_size = 32
  config.num_epochs = 6.0
  config.schedule.warmup_epochs = 0.0
  config.optimizer.base_learning_rate = 0.04  # RMSProp at 0.005 for batch 32
  config.model.bn_momentum = 0.9
  config.ema_decay = 0.9
  config.eval_every_epochs = 6.0
  if arg == "progressive":
    config.progressive.num_stages = 4
    config.progressive.start_image_size = 32
    config.progressive.start_randaug_magnitude = 1.0
    config.progressive.start_dropout_rate = 0.0
  return config
