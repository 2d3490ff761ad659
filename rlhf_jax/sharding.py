"""Device meshes, logical axis rules and placement of params and batches.

Every parameter and large activation in ``rlhf_jax.models`` carries logical
axis names (``embed``, ``heads``, ``mlp``, ``vocab``, ``batch``, …). The rules
below map them onto a three-axis mesh:

* ``data``: pure data parallelism (params replicated);
* ``fsdp``: data parallelism with params sharded over their ``embed`` axis
  (ZeRO-3 style: gathered for each layer by XLA);
* ``tensor``: Megatron-style tensor parallelism over heads, MLP hidden and vocab.

A compiled step is ``jax.jit`` with explicit ``in_shardings``/``out_shardings``
from :func:`param_shardings` and :func:`batch_sharding`, traced inside
:func:`use_mesh` so that activation constraints take effect.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("act_embed", None),
    ("length", None),
    ("cache_length", None),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
    ("position", None),
    ("lora_rank", None),
)


ROLLOUT_RULES = tuple(("embed", None) if name == "embed" else (name, axes)
                      for name, axes in DEFAULT_RULES)
"""The rollout layout's rules: weights sharded over ``tensor`` only (heads, kv heads, MLP
hidden, vocab), never over ``embed``, so a decode step multiplies by local shards and
all-reduces activations instead of all-gathering every weight for every token."""


def rollout_mesh(mesh: Mesh, tensor: int) -> Mesh:
    """The devices of ``mesh`` as ``(data, 1, tensor)``: tensor-parallel groups of ``tensor``
    neighbouring devices (one host's, when ``tensor`` divides its count), data-parallel across."""
    devices = np.asarray(mesh.devices).reshape(-1)  # the training mesh's order: tensor fastest
    if tensor < 1 or len(devices) % tensor:
        raise ValueError(f"rollout tensor size {tensor} does not divide the {len(devices)} devices")
    return Mesh(devices.reshape(-1, 1, tensor), MESH_AXES,
                axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


def default_rollout_tensor(mesh: Mesh, num_kv_heads: int) -> int:
    """The rollout's tensor size: the largest divisor of one host's device count that also
    divides the kv heads (so every tensor shard holds whole kv heads and their query heads)."""
    devices = np.asarray(mesh.devices).reshape(-1)
    first = devices[0].process_index
    local = sum(d.process_index == first for d in devices)
    return max(t for t in range(1, local + 1) if local % t == 0 and num_kv_heads % t == 0)


def resolve_mesh_shape(data: int = -1, fsdp: int = 1, tensor: int = 1,
                       num_devices: Optional[int] = None) -> tuple:
    """Mesh sizes with at most one ``-1`` replaced by the devices left over."""
    num_devices = num_devices or jax.device_count()
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got data={data} fsdp={fsdp} tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"{num_devices} devices do not divide into mesh axes of size {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh data={sizes[0]} × fsdp={sizes[1]} × tensor={sizes[2]} needs "
                         f"{math.prod(sizes)} devices, but {num_devices} are available")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Optional[Sequence] = None) -> Mesh:
    """A ``('data', 'fsdp', 'tensor')`` mesh with classic (auto) axis types.

    ``tensor`` is the fastest-varying axis, so tensor-parallel groups sit on
    neighbouring devices (the same host / ICI ring).
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(data, fsdp, tensor, len(devices))
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=DEFAULT_RULES):
    """Context in which to trace sharded steps: sets the mesh and the logical axis rules."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def logical_param_specs(model, *example_inputs):
    """The logical ``PartitionSpec`` of every parameter of ``model`` (no FLOPs, no memory)."""
    example_inputs = example_inputs or (jnp.zeros((1, 1), jnp.int32),)
    abstract = jax.eval_shape(model.init, jax.random.key(0), *example_inputs)
    return nn.get_partition_spec(abstract)["params"], nn.unbox(abstract)["params"]


def param_shardings(model, mesh: Mesh, rules=DEFAULT_RULES, *example_inputs):
    """``NamedSharding`` for every parameter of ``model`` under ``rules`` on ``mesh``.

    A dimension whose size the mesh axes do not divide is replicated instead
    (logged), so e.g. 3 kv heads still load on ``tensor=2``.
    """
    specs, shapes = logical_param_specs(model, *example_inputs)

    def to_sharding(logical: P, shape):
        mesh_axes = list(nn.logical_to_mesh_axes(logical, rules)) if logical is not None else []
        mesh_axes += [None] * (len(shape.shape) - len(mesh_axes))
        for dim, axes in enumerate(mesh_axes):
            if axes is None:
                continue
            size = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
            if shape.shape[dim] % size:
                log.info("replicating dim %d (%s) of a %s parameter: %d %% %d != 0", dim,
                         logical[dim], shape.shape, shape.shape[dim], size)
                mesh_axes[dim] = None
        return NamedSharding(mesh, P(*mesh_axes))

    return jax.tree.map(to_sharding, specs, shapes, is_leaf=lambda x: isinstance(x, P))


def shard_params(params, shardings):
    """Place ``params`` (host or device arrays, or any state) according to ``shardings``.

    On several processes every process holds the same host value and contributes the shards its
    devices hold (``jax.make_array_from_callback``); PRNG key leaves go as their key data.
    """
    if jax.process_count() == 1:
        return jax.device_put(params, shardings)

    def place(x, target):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, target)  # already global: a reshard
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = place(jax.random.key_data(x), target)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, target, lambda index: host[index])
    return jax.tree.map(place, params, shardings)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``data × fsdp``; the other axes replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def shard_batch(batch, mesh: Mesh):
    """Place a pytree of per-process batch arrays as global arrays sharded over the batch axes.

    On one process this is a ``device_put``. On several, each process passes
    its own slice of the global batch and ``jax.make_array_from_process_local_data``
    assembles the global array (leading dim = sum over processes).
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def process_rows(num_rows: int) -> slice:
    """This process's contiguous share of ``num_rows`` global rows (all of them on one process):
    rows ``[p·n/P, (p+1)·n/P)``, the ones :func:`shard_batch` places on its devices."""
    count, index = jax.process_count(), jax.process_index()
    if num_rows % count:
        raise ValueError(f"a global batch of {num_rows} rows does not split over {count} processes")
    share = num_rows // count
    return slice(index * share, (index + 1) * share)


def local_rows(x) -> np.ndarray:
    """The rows of a batch-sharded global array that this process's devices hold, in order, as
    numpy (the whole array on one process): the inverse of :func:`shard_batch`."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    shards = {}
    for shard in x.addressable_shards:  # replicas over the tensor axis hold the same rows
        shards.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
    return np.concatenate([shards[start] for start in sorted(shards)])


def all_processes(x: np.ndarray) -> np.ndarray:
    """``x`` of every process concatenated along axis 0, in process order (a collective)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def to_host(tree):
    """Device arrays → numpy on every process, gathering shards held by other processes.

    A collective when arrays span several processes: call it on every process.
    """
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            x = multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(jax.device_get(x))
    return jax.tree.map(fetch, tree)


def optimizer_state_shardings(tx, opt_state_shape, params_shardings, mesh: Mesh):
    """Shardings for an optax state: param-shaped leaves follow the params, the rest replicated."""
    import optax
    return optax.tree_map_params(
        tx, lambda _, sharding: sharding, opt_state_shape, params_shardings,
        transform_non_params=lambda _: replicated(mesh))


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
    """Join a multi-host job with ``jax.distributed.initialize``; return whether it did.

    Arguments default to the ``RLHF_JAX_COORDINATOR``, ``RLHF_JAX_NUM_PROCESSES``
    and ``RLHF_JAX_PROCESS_ID`` environment variables. On TPU pod slices and
    SLURM/Open MPI GPU clusters JAX detects all three by itself: set
    ``RLHF_JAX_DISTRIBUTED=auto`` to call ``initialize()`` without arguments.
    A single process (nothing set) does nothing.
    """
    if os.environ.get("RLHF_JAX_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
        return True
    coordinator_address = coordinator_address or os.environ.get("RLHF_JAX_COORDINATOR")
    num_processes = num_processes or int(os.environ.get("RLHF_JAX_NUM_PROCESSES", "1"))
    if process_id is None:
        process_id = int(os.environ.get("RLHF_JAX_PROCESS_ID", "0"))
    if num_processes <= 1:
        return False
    if not coordinator_address:
        raise ValueError("several processes need a coordinator address (host:port); set "
                         "RLHF_JAX_COORDINATOR or pass coordinator_address")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
