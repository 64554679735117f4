"""Print the paper's Table 1 (architecture) and Table 2 (params, multiply-adds) from our spec;
or, with --sweep_dir, the tables and figures of a sweep's runs.

  efficientnet-tables                    # Table 1 for b0, Table 2 b0–b8, l2, every family
  efficientnet-tables --variant=b7       # Table 1 for b7 at its resolution
  efficientnet-tables --variant=v2_s     # Table 1 for EfficientNetV2-S (or lite3, edgetpu_m)
  efficientnet-tables --phi=0.5,2.5 --csv
  efficientnet-tables --baselines        # Table 3's networks: our sizes

  # A sweep of efficientnet-sweep: Table 2/3-style tables, the step-1 grid, Figures 3 and 8
  # (tables.md, figure3_single_dimension.png, figure8_compound.png in the sweep directory).
  efficientnet-tables --sweep_dir=runs/sweep_demo
"""

from __future__ import annotations


from absl import app, flags

from efficientnet_jax.research import paper_tables, sweep_results
from efficientnet_jax.models import registry, scaling

_VARIANT = flags.DEFINE_string("variant", "b0", "Variant whose Table 1 to print.")
_PHI = flags.DEFINE_list("phi", [], "Extra φ values (compound formula) for Table 2.")
_CSV = flags.DEFINE_bool("csv", False, "Print CSV instead of markdown.")
_BASELINES = flags.DEFINE_bool(
    "baselines", False, "Also print Table 3's networks (ResNet-50, MobileNetV1/V2 as the "
    "paper scales them): our params and multiply-adds beside the paper's FLOPs.")
_SWEEP_DIR = flags.DEFINE_string(
    "sweep_dir", None, "A sweep directory (efficientnet-sweep) or any directory of workdirs: "
    "report its runs instead of the structural tables.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the sweep report goes "
                               "(default: --sweep_dir).")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Classifier size when a run's config leaves it to the dataset and the "
    "sweep did not record it; 0: read the dataset.")


def sweep_report() -> None:
  results = sweep_results.load(_SWEEP_DIR.value, _NUM_CLASSES.value or None)
  markdown, figures = sweep_results.report(results, _OUT_DIR.value or _SWEEP_DIR.value)
  print(markdown)
  for path in figures:
    print(f"wrote {path}")


def main(argv):
  del argv
  if _SWEEP_DIR.value:
    sweep_report()
    return
  fmt = paper_tables.to_csv if _CSV.value else paper_tables.to_markdown
  family, variant = registry.lookup(_VARIANT.value)
  size = family.variants[variant]
  network = registry.variant_network(variant, family.name)
  print(f"Table 1: {family.name} {variant} at {size.eval_size}x{size.eval_size}\n")
  print(fmt(paper_tables.TABLE1_HEADER,
            paper_tables.architecture_table(network, size.eval_size)))
  rows = paper_tables.size_table(list(scaling.VARIANTS), [float(p) for p in _PHI.value])
  print("\nTable 2 (structure): ours beside the paper (arXiv v5)\n")
  print(fmt(paper_tables.SIZE_HEADER, paper_tables.size_table_rows(rows)))
  print("\nEvery family's published variants: ours (1000 classes, multiply-adds at the "
        "evaluation size) beside their sources\n")
  print(fmt(paper_tables.FAMILY_HEADER,
            paper_tables.family_table_rows(paper_tables.family_table())))
  if _BASELINES.value:
    print("\nTable 3 (structure): the baselines as the paper scales them, ours beside its "
          "FLOPs\n")
    print(fmt(sweep_results.BASELINE_SIZE_HEADER, sweep_results.baseline_size_rows()))


if __name__ == "__main__":
  app.run(main)
