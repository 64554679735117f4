"""The paper's ImageNet recipe as a ConfigDict; every file under configs/ starts from it.

Only primary values live here. Derived ones (the batch-scaled learning rate, steps per
epoch, the scaled network) are computed in code, so an override such as
`--config.batch_size=1024` stays consistent.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from efficientnet_jax.models import registry

IMAGENET_MEAN_RGB = registry.IMAGENET_MEAN_RGB
IMAGENET_STDDEV_RGB = registry.IMAGENET_STDDEV_RGB


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  # --- Model: a published variant, or the φ formula when variant == "phi". ---
  config.model = ml_collections.ConfigDict()
  # A family of models.registry and one of its sizes: efficientnet (b0 … b8, l2, or "phi"
  # for the formula), efficientnetv2 (v2_b0 … v2_b3, v2_s, v2_m, v2_l, v2_xl),
  # efficientnet_lite (lite0 … lite4), efficientnet_edgetpu (edgetpu_s/m/l), or Table 3's
  # resnet50/152, mobilenetv2/v1, which take EfficientNet's size rows and φ formula.
  config.model.family = "efficientnet"
  config.model.variant = "b0"
  config.model.phi = config_dict.placeholder(float)
  config.model.alpha = 1.2                         # depth base (variant == "phi")
  config.model.beta = 1.1                          # width base
  config.model.gamma = 1.15                        # resolution base
  config.model.resolution_multiple = 8             # φ resolutions round to this
  # Overrides of the variant's row; None keeps the published/derived value.
  config.model.width = config_dict.placeholder(float)
  config.model.depth = config_dict.placeholder(float)
  # Training size; it sets the evaluation size too unless eval_resolution is given. With
  # neither, the variant's own (EfficientNetV2-S: trains at 300, evaluates at 384).
  config.model.resolution = config_dict.placeholder(int)
  config.model.eval_resolution = config_dict.placeholder(int)
  config.model.dropout_rate = config_dict.placeholder(float)
  config.model.drop_path_rate = config_dict.placeholder(float)  # None: the family's (0.2, 0)
  config.model.num_classes = config_dict.placeholder(int)  # None: the dataset's
  config.model.padding = "same"                    # "same" (TF) | "symmetric" (PyTorch)
  config.model.depthwise_impl = "auto"             # "auto" | "xla" | "shift_add"
  config.model.dtype = "float32"                   # compute dtype: float32 | bfloat16
  config.model.remat = False                       # recompute blocks in the backward pass
  config.model.remat_policy = "full"               # with remat: "full" | "save_conv"
  config.model.bn_momentum = config_dict.placeholder(float)  # None: the family's (0.99; V2 0.9)
  config.model.bn_epsilon = 1e-3

  # --- Data. ---
  config.dataset = "imagenet2012"                  # any tfds image classification name
  config.data_dir = config_dict.placeholder(str)
  config.train_split = "train"
  config.eval_split = "validation"
  config.input = ml_collections.ConfigDict()
  config.input.crop_padding = registry.CROP_PADDING  # eval crop res/(res+32) of the short side
  config.input.crop_fraction = config_dict.placeholder(float)  # e.g. 0.875 instead
  config.input.crop_area_range = (0.08, 1.0)      # train crop's share of the image
  config.input.random_flip = True
  config.input.mean_rgb = IMAGENET_MEAN_RGB
  config.input.stddev_rgb = IMAGENET_STDDEV_RGB
  # None or "none" | "autoaugment" | "randaugment"
  config.input.augment = config_dict.placeholder(str)
  config.input.randaug_layers = 2
  config.input.randaug_magnitude = 10
  config.input.mixup_alpha = 0.0                  # 0: off
  config.input.cutmix_alpha = 0.0                 # 0: off
  config.input.skip_bad_images = False            # folder datasets: skip undecodable files
  config.input.skip_bad_records = False           # tfds: skip corrupt records, counted
  config.input.shuffle_buffer = 16_384
  config.input.cache_eval = False

  # --- Optimisation (tensorflow/tpu reference). ---
  config.batch_size = 4096                         # global, across all devices
  config.eval_batch_size = config_dict.placeholder(int)  # None: batch_size
  config.num_epochs = 350.0
  config.num_train_steps = config_dict.placeholder(int)  # overrides num_epochs
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "rmsprop"                # rmsprop | sgd | lars | adamw
  config.optimizer.base_learning_rate = 0.016      # per `base_batch_size` images
  config.optimizer.base_batch_size = 256
  config.optimizer.momentum = 0.9
  config.optimizer.rmsprop_decay = 0.9
  config.optimizer.rmsprop_epsilon = 1e-3
  config.optimizer.adamw_weight_decay = 0.05       # decoupled decay, adamw/lars only
  config.optimizer.l2_weight_decay = 1e-5          # L2 term in the loss, non-BN variables
  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = "exponential"             # exponential | cosine | polynomial
  config.schedule.warmup_epochs = 5.0
  config.schedule.decay_epochs = 2.4               # exponential: staircase interval
  config.schedule.decay_rate = 0.97
  config.schedule.end_learning_rate_factor = 0.0   # cosine/polynomial final lr / peak
  config.schedule.power = 2.0                      # polynomial
  config.label_smoothing = 0.1
  config.ema_decay = 0.9999                        # 0 disables EMA
  config.bn_group_size = 0                         # 0: global batch statistics

  # --- Progressive learning (EfficientNetV2; training/progressive.py). Each start value
  # grows over the stages to the value the rest of the config sets. ---
  config.progressive = ml_collections.ConfigDict()
  config.progressive.num_stages = 0                # 0: off; V2's released recipe: 4
  config.progressive.interpolation = "released"    # "released" (automl's code) | "paper"
  config.progressive.start_image_size = 128        # → the training resolution
  config.progressive.image_size_multiple = 1       # stage sizes round down to this
  config.progressive.start_randaug_magnitude = 5.0   # → config.input.randaug_magnitude
  config.progressive.start_mixup_alpha = 0.0       # → config.input.mixup_alpha
  config.progressive.start_cutmix_alpha = 0.0      # → config.input.cutmix_alpha
  # None: not scheduled (the model's rate in every stage, as in automl's released code).
  config.progressive.start_dropout_rate = config_dict.placeholder(float)
  config.progressive.start_drop_path_rate = config_dict.placeholder(float)

  # --- Evaluation, logging, checkpoints. ---
  config.eval_every_epochs = 1.0
  config.eval_raw_weights = False                  # also evaluate non-EMA weights
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.on_nonfinite = "stop"                     # "stop" with an error | "skip" the step
  config.init_from = config_dict.placeholder(str)  # checkpoint to take params from

  # --- Fine-tuning (configs/finetune.py). ---
  config.finetune = ml_collections.ConfigDict()
  config.finetune.freeze_backbone_epochs = 0.0     # train only the classifier this long
  config.finetune.freeze_bn = False                # keep the loaded BN statistics
  config.allow_config_change = False               # resume with a different config
  return config


def get_config_for(family_name: str, variant: str) -> ml_collections.ConfigDict:
  """The recipe above for a published variant of any family, its input normalised as that
  variant's published weights expect (Lite: (x - 127) / 128)."""
  family = registry.family(family_name)
  if variant not in family.variants:
    raise ValueError(f"unknown {family_name} variant {variant!r}; known: "
                     f"{', '.join(family.variants)}")
  config = get_config()
  config.model.family, config.model.variant = family_name, variant
  preprocessing = family.preprocessing_of(variant)
  config.input.mean_rgb, config.input.stddev_rgb = (preprocessing.mean_rgb,
                                                    preprocessing.stddev_rgb)
  return config
