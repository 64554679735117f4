"""The paper's Tables 1 and 2, recomputed from the network spec beside the published numbers.

Published figures are from arXiv v5 (Table 2 matches the open-source TPU code).
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
