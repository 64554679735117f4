"""The papers' tables recomputed from the network spec beside the published numbers.

Table 1 (architecture) for any variant; Table 2 (EfficientNet sizes and φ) from arXiv v5
(it matches the open-source TPU code); and every family's published variants beside the
figures their authors published (`PUBLISHED`, sources named per row).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Sequence

from efficientnet_jax.models import architecture, costs, registry, scaling

# Paper Table 1 (B0 at 224): stage, operator, input resolution, channels, layers.
PAPER_TABLE1_B0 = (
    (1, "Conv3x3", "224x224", 32, 1),
    (2, "MBConv1, k3x3", "112x112", 16, 1),
    (3, "MBConv6, k3x3", "112x112", 24, 2),
    (4, "MBConv6, k5x5", "56x56", 40, 2),
    (5, "MBConv6, k3x3", "28x28", 80, 3),
    (6, "MBConv6, k5x5", "14x14", 112, 3),
    (7, "MBConv6, k5x5", "14x14", 192, 4),
    (8, "MBConv6, k3x3", "7x7", 320, 1),
    (9, "Conv1x1 & Pooling & FC", "7x7", 1280, 1),
)

# Paper Table 2: top-1 (%), parameters, multiply-adds ("FLOPs").
PAPER_TABLE2 = {
    "b0": (77.1, 5.3e6, 0.39e9),
    "b1": (79.1, 7.8e6, 0.70e9),
    "b2": (80.1, 9.2e6, 1.0e9),
    "b3": (81.6, 12e6, 1.8e9),
    "b4": (82.9, 19e6, 4.2e9),
    "b5": (83.6, 30e6, 9.9e9),
    "b6": (84.0, 43e6, 19e9),
    "b7": (84.3, 66e6, 37e9),
}



@dataclasses.dataclass(frozen=True)
class Published:
  """What a variant's authors published: ImageNet top-1 (%), parameters, multiply-adds."""

  source: str
  top1: float | None
  params: float | None
  multiply_adds: float | None


_V1 = "EfficientNet paper Table 2"
_V2_PAPER = "EfficientNetV2 paper Table 7"
_V2_README = "google/automl efficientnetv2 README"
_LITE = "tensorflow/tpu lite README"
_EDGETPU = "tensorflow/tpu edgetpu README"
# Per variant, one row per source. V2-XL's 87.3 is after ImageNet-21k pre-training (it has
# no ImageNet-1k-only result); the V2 README's counts are those of the released code. The
# Lite README's MAdds exceed the convolutions' multiply-adds by about 3 per activation
# element (BN and ReLU6 counted, as far as we can tell); EdgeTPU's gives top-1 only.
PUBLISHED: dict[str, tuple[Published, ...]] = {
    **{name: (Published(_V1, *row),) for name, row in PAPER_TABLE2.items()},
    "v2_b0": (Published(_V2_README, 78.7, 7.1e6, 0.72e9),),
    "v2_b1": (Published(_V2_README, 79.8, 8.1e6, 1.2e9),),
    "v2_b2": (Published(_V2_README, 80.5, 10.1e6, 1.7e9),),
    "v2_b3": (Published(_V2_README, 82.1, 14.4e6, 3.0e9),),
    "v2_s": (Published(_V2_PAPER, 83.9, 22e6, 8.8e9), Published(_V2_README, 83.9, 21.5e6, 8.4e9)),
    "v2_m": (Published(_V2_PAPER, 85.1, 54e6, 24e9), Published(_V2_README, 85.2, 54.1e6, 24.7e9)),
    "v2_l": (Published(_V2_PAPER, 85.7, 120e6, 53e9),
             Published(_V2_README, 85.7, 119.5e6, 56.3e9)),
    "v2_xl": (Published(_V2_PAPER + " (ImageNet-21k pre-trained)", 87.3, 208e6, 94e9),),
    "lite0": (Published(_LITE, 75.1, 4.7e6, 407e6),),
    "lite1": (Published(_LITE, 76.7, 5.4e6, 631e6),),
    "lite2": (Published(_LITE, 77.6, 6.1e6, 899e6),),
    "lite3": (Published(_LITE, 79.8, 8.2e6, 1.44e9),),
    "lite4": (Published(_LITE, 81.5, 13.0e6, 2.64e9),),
    "edgetpu_s": (Published(_EDGETPU, 77.23, None, None),),
    "edgetpu_m": (Published(_EDGETPU, 78.69, None, None),),
    "edgetpu_l": (Published(_EDGETPU, 80.62, None, None),),
}

TABLE1_HEADER = ("stage", "operator", "resolution", "channels", "layers")
_OPERATORS = {architecture.MBCONV: "MBConv", architecture.FUSED_MBCONV: "Fused-MBConv",
              architecture.DEPTHWISE_SEPARABLE: "DWConv", architecture.BOTTLENECK: "Bottleneck"}


def architecture_table(network: architecture.Network, resolution: int) -> list[tuple]:
  """Table 1 for any scaled network: one row per stage, input resolution of each."""
  k = network.architecture.stem_kernel
  rows = [(1, f"Conv{k}x{k}", f"{resolution}x{resolution}", network.stem_channels, 1)]
  size = -(-resolution // architecture.STEM_STRIDE)
  for stage in range(network.num_stages):
    blocks = [b for b in network.blocks if b.stage == stage]
    first = blocks[0]
    operator = f"{_OPERATORS[first.kind]}{first.expand_ratio}, k{first.kernel}x{first.kernel}"
    rows.append((stage + 2, operator, f"{size}x{size}", first.out_channels, len(blocks)))
    size = -(-size // first.stride)
  rows.append((network.num_stages + 2, "Conv1x1 & Pooling & FC", f"{size}x{size}",
               network.head_channels, 1))
  return rows


@dataclasses.dataclass(frozen=True)
class SizeRow:
  name: str
  width: float
  depth: float
  resolution: int
  params: int
  multiply_adds: int
  paper_params: float | None
  paper_multiply_adds: float | None

  def deviation(self, ours: float, paper: float | None) -> str:
    return "" if paper is None else f"{100 * (ours / paper - 1):+.1f}%"


def size_row(name: str, size: scaling.Scaling, num_classes: int = 1000) -> SizeRow:
  network = registry.build("efficientnet", size.width, size.depth)
  params = costs.count_params(network, num_classes)
  paper = PAPER_TABLE2.get(name)
  return SizeRow(name, size.width, size.depth, size.resolution, params,
                 costs.multiply_adds(network, size.resolution, num_classes),
                 paper[1] if paper else None, paper[2] if paper else None)


def size_table(variants: Sequence[str], phis: Sequence[float] = ()) -> list[SizeRow]:
  """Table 2's structural columns for named variants and φ values of the formula."""
  rows = [size_row(v, scaling.variant(v)) for v in variants]
  rows += [size_row(f"phi={phi:g}", scaling.compound(phi)) for phi in phis]
  return rows


SIZE_HEADER = ("model", "width", "depth", "resolution", "params", "paper params",
               "params dev", "multiply-adds (B)", "paper (B)", "multiply-adds dev")


def size_table_rows(rows: Sequence[SizeRow]) -> list[tuple]:
  out = []
  for r in rows:
    out.append((r.name, f"{r.width:.3f}", f"{r.depth:.3f}", r.resolution, f"{r.params:,}",
                "" if r.paper_params is None else f"{r.paper_params / 1e6:g}M",
                r.deviation(r.params, r.paper_params),
                f"{r.multiply_adds / 1e9:.3f}",
                "" if r.paper_multiply_adds is None else f"{r.paper_multiply_adds / 1e9:g}",
                r.deviation(r.multiply_adds, r.paper_multiply_adds)))
  return out


@dataclasses.dataclass(frozen=True)
class VariantRow:
  """A published variant: our counts at its sizes beside one source's figures."""

  family: str
  name: str
  resolution: int       # training
  eval_resolution: int  # where the multiply-adds are counted, as the sources count them
  params: int
  multiply_adds: int
  published: Published


def family_table(family_names: Sequence[str] | None = None,
                 num_classes: int = 1000) -> list[VariantRow]:
  """Every published variant of the families (default: all but the Table 3 baselines),
  one row per source that published figures for it."""
  names = family_names or [f.name for f in registry.FAMILIES.values()
                           if f.variants is not scaling.VARIANTS or
                           f.name == registry.DEFAULT_FAMILY]
  rows = []
  for family_name in names:
    family = registry.family(family_name)
    for variant, size in family.variants.items():
      network = registry.variant_network(variant, family_name)
      params = costs.count_params(network, num_classes)
      madds = costs.multiply_adds(network, size.eval_size, num_classes)
      rows += [VariantRow(family_name, variant, size.resolution, size.eval_size, params, madds,
                          p) for p in PUBLISHED.get(variant, (Published("", None, None, None),))]
  return rows


FAMILY_HEADER = ("family", "variant", "train / eval res", "params", "published params",
                 "multiply-adds (B)", "published (B)", "dev", "published top-1", "source")


def family_table_rows(rows: Sequence[VariantRow]) -> list[tuple]:
  deviation = lambda ours, theirs: "" if theirs is None else f"{100 * (ours / theirs - 1):+.1f}%"
  number = lambda x, scale, unit: "" if x is None else f"{x / scale:g}{unit}"
  return [(r.family, r.name, f"{r.resolution} / {r.eval_resolution}", f"{r.params:,}",
           number(r.published.params, 1e6, "M"), f"{r.multiply_adds / 1e9:.3f}",
           number(r.published.multiply_adds, 1e9, ""),
           deviation(r.multiply_adds, r.published.multiply_adds),
           "" if r.published.top1 is None else f"{r.published.top1:g}", r.published.source)
          for r in rows]


def to_markdown(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  lines = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
  return "\n".join(lines)


def to_csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue()
