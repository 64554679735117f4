"""Model families and their variants: the one place a model name is resolved.

A family is an architecture (a table in `families/`), its named sizes (width, depth,
resolution, dropout; a size may have a table of its own, as EfficientNetV2-S does),
whether the φ formula may size it, its default drop-path rate and the preprocessing its
published weights expect. `config.model.family` picks the family,
`config.model.variant` the size ("phi": the paper's formula with config.model.phi/alpha/
beta/gamma), and config.model.width/depth/resolution/eval_resolution/dropout_rate
override single values.

The Table 3 baselines take EfficientNet's size rows and formula: the paper scales them
with the same compound rule. Configs, the validator, converters, sweeps, tables, latency
and the benchmark ask this module; nothing else decides what a name means.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from efficientnet_jax.models import architecture, scaling
from efficientnet_jax.models.families import (baselines, efficientnet, efficientnet_edgetpu,
                                              efficientnet_lite, efficientnet_v2)

PHI = "phi"  # config.model.variant for sizes from the φ formula
IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Eval crop: the central res/(res+32) of the short side, as the released checkpoints were
# evaluated (newer reference code uses a crop fraction of 0.875 instead).
CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How images are normalised for a family's published weights (0-255 scale)."""

  mean_rgb: tuple[float, float, float] = IMAGENET_MEAN_RGB
  stddev_rgb: tuple[float, float, float] = IMAGENET_STDDEV_RGB
  crop_padding: int = CROP_PADDING


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  architecture: architecture.Architecture
  variants: Mapping[str, scaling.Scaling]  # the published sizes, by name
  compound_scaling: bool = True            # config.model.variant="phi" allowed
  drop_path_rate: float = 0.0              # when config.model.drop_path_rate is None
  bn_momentum: float = 0.99                # when config.model.bn_momentum is None
  preprocessing: Preprocessing = Preprocessing()
  default_variant: str = "b0"
  description: str = ""
  tables: Mapping[str, architecture.Architecture] = dataclasses.field(default_factory=dict)
  variant_preprocessing: Mapping[str, Preprocessing] = dataclasses.field(default_factory=dict)

  def architecture_of(self, variant: str | None) -> architecture.Architecture:
    """The table a variant is built from: its own, or the family's scaled."""
    return self.tables.get(variant, self.architecture)

  def preprocessing_of(self, variant: str | None) -> Preprocessing:
    """The normalisation a variant's published weights expect."""
    return self.variant_preprocessing.get(variant, self.preprocessing)


def _families(*families: Family) -> dict[str, Family]:
  return {f.name: f for f in families}


def _sizes(**rows: tuple) -> dict[str, scaling.Scaling]:
  """name=(width, depth, resolution, dropout[, evaluation resolution])."""
  return {name: scaling.Scaling(*row) for name, row in rows.items()}


# tensorflow/tpu's Lite and EdgeTPU builders normalise with (x - 127) / 128.
_MOBILE = Preprocessing(mean_rgb=(127.0,) * 3, stddev_rgb=(128.0,) * 3)
# EfficientNetV2 S-XL take (x - 128) / 128 (Keras's port of automl); B0-B3 V1's ImageNet
# mean and standard deviation.
_V2_LARGE = Preprocessing(mean_rgb=(128.0,) * 3, stddev_rgb=(128.0,) * 3)


FAMILIES: dict[str, Family] = _families(
    Family("efficientnet", efficientnet.B0, scaling.VARIANTS, drop_path_rate=0.2,
           description="EfficientNet B0–B8, L2 (Tan & Le, 2019)"),
    *(Family(arch.name, arch, scaling.VARIANTS,
             description="Table 3 baseline, sized by EfficientNet's rows and formula")
      for arch in baselines.ARCHITECTURES),
    # google/automl effnetv2_configs.py: train size, dropout, eval size; BN momentum 0.9.
    Family("efficientnetv2", efficientnet_v2.BASE, _sizes(
        v2_b0=(1.0, 1.0, 192, 0.2, 224), v2_b1=(1.0, 1.1, 192, 0.2, 240),
        v2_b2=(1.1, 1.2, 208, 0.3, 260), v2_b3=(1.2, 1.4, 240, 0.3, 300),
        v2_s=(1.0, 1.0, 300, 0.2, 384), v2_m=(1.0, 1.0, 384, 0.3, 480),
        v2_l=(1.0, 1.0, 384, 0.4, 480), v2_xl=(1.0, 1.0, 384, 0.4, 512)),
           compound_scaling=False, drop_path_rate=0.2, bn_momentum=0.9,
           default_variant="v2_b0",
           tables={"v2_s": efficientnet_v2.S, "v2_m": efficientnet_v2.M,
                   "v2_l": efficientnet_v2.L, "v2_xl": efficientnet_v2.XL},
           variant_preprocessing=dict.fromkeys(("v2_s", "v2_m", "v2_l", "v2_xl"), _V2_LARGE),
           description="EfficientNetV2 B0–B3, S, M, L, XL (Tan & Le, 2021)"),
    Family("efficientnet_lite", efficientnet_lite.LITE, _sizes(
        lite0=(1.0, 1.0, 224, 0.2), lite1=(1.0, 1.1, 240, 0.2), lite2=(1.1, 1.2, 260, 0.3),
        lite3=(1.2, 1.4, 280, 0.3), lite4=(1.4, 1.8, 300, 0.3)),
           compound_scaling=False, drop_path_rate=0.2, preprocessing=_MOBILE,
           default_variant="lite0", description="EfficientNet-Lite 0–4 (tensorflow/tpu)"),
    Family("efficientnet_edgetpu", efficientnet_edgetpu.EDGETPU, _sizes(
        edgetpu_s=(1.0, 1.0, 224, 0.2), edgetpu_m=(1.0, 1.1, 240, 0.2),
        edgetpu_l=(1.2, 1.4, 300, 0.2)),
           compound_scaling=False, drop_path_rate=0.2, preprocessing=_MOBILE,
           default_variant="edgetpu_s",
           description="EfficientNet-EdgeTPU S, M, L (tensorflow/tpu)"),
)
DEFAULT_FAMILY = "efficientnet"


def family(name: str) -> Family:
  try:
    return FAMILIES[name]
  except KeyError:
    raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def family_of(model_config: Any) -> Family:
  """config.model.family (EfficientNet for configs from before that key existed)."""
  name = model_config.get("family", DEFAULT_FAMILY) or DEFAULT_FAMILY
  try:
    return family(name)
  except ValueError as e:
    raise ValueError(f"config.model.family: {e}") from None


def variant_names(family_name: str = DEFAULT_FAMILY) -> list[str]:
  """What config.model.variant may be for the family."""
  f = family(family_name)
  return [*f.variants, *([PHI] if f.compound_scaling else [])]


def scaling_of(model_config: Any) -> scaling.Scaling:
  """The size a `config.model` asks for: its variant row (or φ formula) plus overrides."""
  f = family_of(model_config)
  name = model_config.variant
  if name == PHI and f.compound_scaling:
    if model_config.phi is None:
      raise ValueError('config.model.phi must be set when config.model.variant == "phi"')
    base = scaling.compound(model_config.phi, model_config.alpha, model_config.beta,
                            model_config.gamma, model_config.resolution_multiple)
  elif name in f.variants:
    base = f.variants[name]
  else:
    raise ValueError(f"config.model.variant: unknown EfficientNet variant {name!r}; "
                     f"known: {', '.join(variant_names(f.name))}")
  overrides = {key: model_config.get(key)
               for key in ("width", "depth", "resolution", "dropout_rate", "eval_resolution")
               if model_config.get(key) is not None}
  if "resolution" in overrides:  # one size for both, unless eval_resolution says otherwise
    overrides.setdefault("eval_resolution", None)
  try:
    return dataclasses.replace(base, **overrides)
  except ValueError as e:
    raise ValueError(f"config.model: {e}") from None


def lookup(name: str) -> tuple[Family, str]:
  """A model name: a variant ("b3", "v2_s", "lite0") or a family ("resnet50", at its
  default size). Returns the family and the variant name."""
  if name in FAMILIES:
    return FAMILIES[name], FAMILIES[name].default_variant
  for f in FAMILIES.values():  # the default family first: baselines share its size names
    if name in f.variants:
      return f, name
  raise ValueError(f"unknown model {name!r}; known: {', '.join(model_names())}")


def model_names() -> list[str]:
  """Every name `lookup` resolves: each family's variants, then the baseline families."""
  names = [v for f in FAMILIES.values() if f.variants is not scaling.VARIANTS
           for v in f.variants]
  return [*scaling.VARIANTS, *names,
          *(f.name for f in FAMILIES.values() if f.variants is scaling.VARIANTS
            and f.name != DEFAULT_FAMILY)]


def drop_path_rate_of(model_config: Any) -> float:
  rate = model_config.get("drop_path_rate")
  return family_of(model_config).drop_path_rate if rate is None else rate


def bn_momentum_of(model_config: Any) -> float:
  momentum = model_config.get("bn_momentum")
  return family_of(model_config).bn_momentum if momentum is None else momentum


def build(family_name: str = DEFAULT_FAMILY, width: float = 1.0, depth: float = 1.0,
          drop_path_rate: float | None = None, variant: str | None = None
          ) -> architecture.Network:
  """The family's architecture (the variant's own table if it has one) scaled by `width`
  and `depth`; drop path: the family's default unless given."""
  f = family(family_name)
  rate = f.drop_path_rate if drop_path_rate is None else drop_path_rate
  return architecture.build(f.architecture_of(variant), width, depth, rate)


def network_of(model_config: Any) -> architecture.Network:
  """The scaled block list a `config.model` describes (nothing is built in Flax)."""
  size = scaling_of(model_config)
  return build(family_of(model_config).name, size.width, size.depth,
               drop_path_rate_of(model_config), variant=model_config.variant)


def variant_network(name: str, family_name: str | None = None) -> architecture.Network:
  """The block list of a published variant, e.g. variant_network("b3") or ("v2_s").

  `family_name` None: the family `lookup(name)` finds.
  """
  if family_name is None:
    family_name = lookup(name)[0].name
  size = family(family_name).variants.get(name)
  if size is None:
    raise ValueError(f"unknown {family_name} variant {name!r}; known: "
                     f"{', '.join(family(family_name).variants)}")
  return build(family_name, size.width, size.depth, variant=name)


def infer_variant(stem_channels: int, head_channels: int, num_blocks: int,
                  family_name: str | None = DEFAULT_FAMILY,
                  squeeze_excite: bool | None = None) -> str:
  """The published variant with this stem width, head width and block count.

  What every converter asks when the weights file does not name its variant. Searches
  `family_name`'s variants, or every family's (not the baselines, which have no published
  weights) with None; `squeeze_excite` tells apart sizes that differ only by it (B0 and
  Lite0 have the same stem, head and block count).
  """
  found = (stem_channels, head_channels, num_blocks)
  families = ([family(family_name)] if family_name else
              [f for f in FAMILIES.values()
               if f.variants is not scaling.VARIANTS or f.name == DEFAULT_FAMILY])
  matches = []
  for f in families:
    for name in f.variants:
      network = variant_network(name, f.name)
      has_se = any(b.se_channels for b in network.blocks)
      if (network.stem_channels, network.head_channels, len(network.blocks)) == found and (
          squeeze_excite is None or squeeze_excite == has_se):
        matches.append(name)
  if len(matches) == 1:
    return matches[0]
  if matches:
    raise ValueError(f"stem width {found[0]}, head width {found[1]} and {found[2]} blocks fit "
                     f"{', '.join(matches)}; name the variant")
  raise ValueError(f"no EfficientNet variant has stem width {found[0]}, head width "
                   f"{found[1]} and {found[2]} blocks")
