"""The device mesh of data-parallel training and evaluation, and how batches lie on it.

One mesh axis `data` over every device of every process: the train state is replicated,
the global batch is split along `data`. With BatchNorm groups of k devices
(`config.bn_group_size`), the mesh is (n/k, k) with axes ("bn_groups", "data"), the inner
axis one group, and the batch is split over both.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh(bn_group_size: int = 0) -> jax.sharding.Mesh:
  """All devices on one batch axis `data`; with BN groups of k devices, a (n/k, k) mesh
  ("bn_groups", "data") whose inner axis is one group. The batch is split over all axes."""
  devices = jax.device_count()
  # Auto axis types: Explicit mode would give dropout masks sharding-dependent shapes.
  if bn_group_size:
    return jax.make_mesh((devices // bn_group_size, bn_group_size), ("bn_groups", "data"),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
  return jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """A full copy on every device of the mesh (the train state, the eval sums)."""
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's part of a batch (numpy) → the global batch array split over `mesh`."""
  data = batch_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(data, x), local_batch)
