"""Speed, compile time, FLOPs and memory of the steps training and evaluation really run.

Ours is measured through `train_step.compile_train_step` (the jitted, donated, sharded step
that training runs, fed uint8 images and int32 labels) and an inference function (uint8 → on-device
normalisation → eval-mode logits). Peers (Keras/TensorFlow, timm/PyTorch) build the same
variant at the same shapes. Every system is warmed up, then timed in turns (one step each,
round after round) so that other load on the machine hits them alike; throughput is the
median over rounds with its min–max spread.

Besides wall-clock images/s, each timing records the process CPU time per image (user and
system): on a shared machine other processes steal cores, which wall time counts and CPU
time does not; system time is mostly the kernel zeroing freshly mapped pages.
Model FLOPs are the analytic multiply-adds ×2 (×3 for a train step: forward + two backward
products); MFU divides the achieved rate by a matmul peak measured in the same process.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import resource
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from efficientnet_jax.config import defaults
from efficientnet_jax.training import optimizers
from efficientnet_jax.data import preprocessing
from efficientnet_jax.models import convnet, costs, registry
from efficientnet_jax.training import sharding, train_step

NUM_CLASSES = 1000
IMAGENET_TRAIN_EXAMPLES = 1_281_167  # only sets the learning-rate schedule's time scale
MODES = ("inference", "train")
LATENCY = "latency"  # a mode too: inference at batch 1, reported in milliseconds
PEERS = ("keras", "timm")
KERAS_MODELS = {**{f"b{i}": f"EfficientNetB{i}" for i in range(8)},
                **{f"v2_b{i}": f"EfficientNetV2B{i}" for i in range(4)},
                **{f"v2_{s}": f"EfficientNetV2{s.upper()}" for s in "sml"}}


@dataclasses.dataclass
class Runner:
  """One system ready to run one step at a time (synchronously)."""

  system: str
  mode: str
  step: Callable[[], Any]
  compile_seconds: float | None = None      # ours: lower + compile of the jitted step
  cost: costs.XlaCost | None = None     # ours: XLA's analysis of that executable
  peak_rss_bytes: int | None = None         # process peak after building and compiling
  compiled: Any = None                      # ours: the executable (its HLO for profiles)
  dtype: str = "float32"                    # compute dtype (peers: always float32)


@dataclasses.dataclass
class Measurement:
  system: str
  mode: str
  variant: str
  resolution: int
  batch_size: int
  dtype: str
  images_per_second: float       # median over timed rounds
  images_per_second_min: float
  images_per_second_max: float
  cpu_ms_per_image: float        # median process CPU (user + system) time per image
  system_ms_per_image: float     # its kernel part (page faults, mostly)
  first_call_seconds: float      # compile (or tracing) + one step
  model_flops: float             # per step, analytic
  mfu: float                     # model FLOP/s over the measured matmul peak
  compile_seconds: float | None = None
  xla_flops: float | None = None
  temp_bytes: int | None = None
  argument_bytes: int | None = None
  output_bytes: int | None = None
  alias_bytes: int | None = None
  peak_rss_bytes: int | None = None
  ratio_to_ours: float | None = None  # images/s over ours, same mode


def peak_rss_bytes() -> int:
  """Peak resident memory of this process so far (Linux reports kilobytes)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matmul_peak_flops(size: int = 2048, dtype: Any = jnp.float32, reps: int = 5) -> float:
  """Best FLOP/s of a square matmul: the compute roof MFU is measured against."""
  a = jnp.asarray(np.random.RandomState(0).standard_normal((size, size)), dtype)
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    start = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2 * size**3 / best


def benchmark_config(variant: str, batch_size: int, resolution: int | None = None,
                     dtype: str = "float32", depthwise_impl: str = "auto",
                     remat_policy: str | None = None, width: float | None = None,
                     depth: float | None = None) -> ml_collections.ConfigDict:
  """The default training recipe for `variant`, resized; remat_policy None: no remat."""
  config = defaults.get_config()
  family, config.model.variant = registry.lookup(variant)
  config.model.family = family.name
  config.model.resolution = resolution
  config.model.width, config.model.depth = width, depth
  config.model.num_classes = NUM_CLASSES
  config.model.dtype = dtype
  config.model.depthwise_impl = depthwise_impl
  config.model.remat = remat_policy is not None
  config.model.remat_policy = remat_policy or "full"
  config.batch_size = batch_size
  return config


def input_resolution(config: ml_collections.ConfigDict) -> int:
  """The input resolution `config.model` trains at (the variant's unless overridden)."""
  return registry.scaling_of(config.model).resolution


def synthetic_batch(batch_size: int, resolution: int, seed: int = 0) -> dict[str, np.ndarray]:
  """What the input pipeline hands the step: uint8 images and int32 labels."""
  rng = np.random.RandomState(seed)
  return {"image": rng.randint(0, 256, (batch_size, resolution, resolution, 3), np.uint8),
          "label": rng.randint(0, NUM_CLASSES, (batch_size,), np.int32)}


def inference_fn(model: Any, config: ml_collections.ConfigDict) -> Callable[..., jax.Array]:
  """uint8 images → logits, normalised on device as in evaluation."""
  def infer(variables, images):
    images = preprocessing.normalize(images, config.input.mean_rgb, config.input.stddev_rgb)
    return model.apply(variables, images, train=False)
  return infer


def _timed_compile(jitted: Any, *args: Any, compiler_options: dict[str, Any] | None = None
                   ) -> tuple[Any, float]:
  start = time.perf_counter()
  compiled = jitted.lower(*args).compile(compiler_options)
  return compiled, time.perf_counter() - start


def ours(config: ml_collections.ConfigDict, mode: str, system: str = "ours",
         compile_only: bool = False, compiler_options: dict[str, Any] | None = None) -> Runner:
  """Our model under `config`: the real train step, or jitted inference.

  compiler_options: XLA options (DebugOptions fields) for this compile, e.g.
  {"xla_cpu_use_onednn": True}; None: the process's defaults (XLA_FLAGS).
  """
  mesh = sharding.make_mesh()
  replicated, data = sharding.replicated(mesh), sharding.batch_sharding(mesh)
  model, resolution = train_step.create_model(config, NUM_CLASSES)
  batch = synthetic_batch(config.batch_size, resolution)
  if compile_only:  # shapes only: nothing the size of the model is allocated
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=data)
             for k, v in batch.items()}
  else:
    batch = jax.device_put(batch, data)
  key = jax.random.key(config.seed)
  if mode == "train":
    lr = optimizers.learning_rate_fn(config, IMAGENET_TRAIN_EXAMPLES / config.batch_size)
    tx = optimizers.create_optimizer(config, lr)
    init = jax.jit(functools.partial(train_step.create_train_state, model, tx, resolution),
                   out_shardings=replicated)
    state = jax.eval_shape(init, key) if compile_only else init(key)
    compiled, seconds = _timed_compile(
        train_step.compile_train_step(model, tx, lr, config, mesh), state, batch, key,
        compiler_options=compiler_options)
    holder = [state]

    def step():
      holder[0], metrics = compiled(holder[0], batch, key)
      jax.block_until_ready(metrics)
  elif mode in ("inference", LATENCY):
    images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
    init = jax.jit(model.init, out_shardings=replicated)
    variables = jax.eval_shape(init, key, images) if compile_only else init(key, images)
    compiled, seconds = _timed_compile(
        jax.jit(inference_fn(model, config), in_shardings=(replicated, data),
                out_shardings=replicated), variables, batch["image"],
        compiler_options=compiler_options)

    def step():
      compiled(variables, batch["image"]).block_until_ready()
  else:
    raise ValueError(f"mode must be one of {(*MODES, LATENCY)}, got {mode!r}")
  return Runner(system, mode, step, compile_seconds=seconds, cost=costs.compiled_cost(compiled),
                peak_rss_bytes=peak_rss_bytes(), compiled=compiled, dtype=config.model.dtype)


def keras_name(variant: str) -> str:
  """The keras.applications constructor of one of our variant names (V1 and V2 only)."""
  if variant not in KERAS_MODELS:
    raise ValueError(f"--peer=keras: Keras has no {variant!r}; it has "
                     f"{', '.join(KERAS_MODELS)}")
  return KERAS_MODELS[variant]


def timm_name(variant: str) -> str:
  """timm's model for one of our variant names: its PyTorch-native definition where timm
  has one (symmetric padding, what PyTorch users run), else the TF port."""
  if re.fullmatch(r"b\d|lite\d", variant):
    return f"efficientnet_{variant}"
  if re.fullmatch(r"v2_(s|m|l|xl)", variant):
    return f"efficientnetv2_{variant[3:]}"
  if re.fullmatch(r"v2_b\d", variant):
    return f"tf_efficientnetv2_{variant[3:]}"
  if re.fullmatch(r"edgetpu_(s|m|l)", variant):
    return f"efficientnet_e{variant[-1]}"
  raise ValueError(f"--peer=timm: no timm model for {variant!r}")


def keras(variant: str, resolution: int, batch_size: int, mode: str) -> Runner:
  """keras.applications.EfficientNet<variant> (its own rescaling/normalisation inside)."""
  import keras as keras_lib  # heavy and optional: only when asked for
  import tensorflow as tf

  for gpu in tf.config.list_physical_devices("GPU"):  # share the GPU with JAX
    tf.config.experimental.set_memory_growth(gpu, True)
  model = getattr(keras_lib.applications, keras_name(variant))(
      weights=None, input_shape=(resolution, resolution, 3), classes=NUM_CLASSES)
  batch = synthetic_batch(batch_size, resolution)
  images = batch["image"].astype(np.float32)
  system = f"keras ({keras_lib.backend.backend()})"
  if mode in ("inference", LATENCY):
    if keras_lib.backend.backend() == "tensorflow":
      infer, images = tf.function(lambda x: model(x, training=False)), tf.constant(images)
    else:
      infer = functools.partial(model, training=False)
    return Runner(system, mode, lambda: np.asarray(infer(images)))
  model.compile(
      optimizer=keras_lib.optimizers.RMSprop(0.016 * batch_size / 256, rho=0.9, momentum=0.9,
                                             epsilon=1e-3),
      loss=keras_lib.losses.CategoricalCrossentropy(label_smoothing=0.1))
  labels = np.eye(NUM_CLASSES, dtype=np.float32)[batch["label"]]
  return Runner(system, mode, lambda: model.train_on_batch(images, labels))


def timm(variant: str, resolution: int, batch_size: int, mode: str) -> Runner:
  """timm's `efficientnet_<variant>` (PyTorch-native definition), NCHW, default threads."""
  if "timm" not in sys.modules and "tensorflow" in sys.modules:
    # Seen here: torchvision (imported by timm) segfaults once TensorFlow is loaded.
    raise RuntimeError("import timm before tensorflow (which the preprocessing imports)")
  import timm as timm_lib  # optional
  import torch

  # On the device JAX uses, where PyTorch has one (CUDA); the CPU otherwise.
  device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
  model = timm_lib.create_model(timm_name(variant), pretrained=False,
                                num_classes=NUM_CLASSES).to(device)
  batch = synthetic_batch(batch_size, resolution)
  images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).float().to(device)
  if mode in ("inference", LATENCY):
    model.eval()

    def infer():
      with torch.inference_mode():
        model(images).sum().item()  # .item() waits for the device
    return Runner("timm (torch)", mode, infer)
  model.train()
  labels = torch.from_numpy(batch["label"]).long().to(device)
  optimizer = torch.optim.RMSprop(model.parameters(), lr=0.016 * batch_size / 256, alpha=0.9,
                                  eps=1e-3, momentum=0.9)
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    optimizer.step()
    loss.item()
  return Runner("timm (torch)", mode, step)


def peer(name: str, variant: str, resolution: int, batch_size: int, mode: str) -> Runner:
  if name not in PEERS:
    raise ValueError(f"peer must be one of {PEERS}, got {name!r}")
  runner = (keras if name == "keras" else timm)(variant, resolution, batch_size, mode)
  runner.peak_rss_bytes = peak_rss_bytes()
  return runner


def time_in_turns(runners: Sequence[Runner], warmup: int, reps: int
                  ) -> tuple[list[float], list[list[tuple[float, float, float]]]]:
  """Warm every runner up, then time one step of each in turn, `reps` rounds.

  Returns each runner's first-call seconds and its (wall, user CPU, system CPU) seconds
  per round.
  """
  first = []
  for runner in runners:
    start = time.perf_counter()
    runner.step()
    first.append(time.perf_counter() - start)
    for _ in range(warmup - 1):
      runner.step()
  times: list[list[tuple[float, float, float]]] = [[] for _ in runners]
  for _ in range(reps):
    for runner, log in zip(runners, times):
      # getrusage counts CPU time in microseconds; os.times() only in 10 ms ticks.
      wall, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
      runner.step()
      end = resource.getrusage(resource.RUSAGE_SELF)
      log.append((time.perf_counter() - wall, end.ru_utime - cpu.ru_utime,
                  end.ru_stime - cpu.ru_stime))
  return first, times


def model_flops(config: ml_collections.ConfigDict, mode: str) -> float:
  """Analytic FLOPs of one step: 2·multiply-adds per image (×3 when training)."""
  model, size = convnet.create(config.model, NUM_CLASSES)
  forward = 2 * costs.multiply_adds(model.network, size.resolution, NUM_CLASSES)
  return forward * config.batch_size * (3 if mode == "train" else 1)


def summarise(runners: Sequence[Runner], first: Sequence[float],
              times: Sequence[Sequence[tuple[float, float, float]]],
              config: ml_collections.ConfigDict,
              peak_flops: float | dict[str, float]) -> list[Measurement]:
  """One `Measurement` per runner; ratios against the first "ours" runner of each mode.

  peak_flops: the matmul peak MFU divides by, or one per compute dtype.
  """
  results = []
  batch = config.batch_size
  for runner, first_s, log in zip(runners, first, times):
    wall, user, system = (np.array(t) for t in zip(*log))
    flops = model_flops(config, runner.mode)
    peak = peak_flops[runner.dtype] if isinstance(peak_flops, dict) else peak_flops
    cost = runner.cost
    results.append(Measurement(
        system=runner.system, mode=runner.mode, variant=config.model.variant,
        resolution=input_resolution(config), batch_size=batch, dtype=runner.dtype,
        images_per_second=batch / float(np.median(wall)),
        images_per_second_min=batch / float(wall.max()),
        images_per_second_max=batch / float(wall.min()),
        cpu_ms_per_image=1e3 * float(np.median(user + system)) / batch,
        system_ms_per_image=1e3 * float(np.median(system)) / batch,
        first_call_seconds=first_s, model_flops=flops,
        mfu=flops / float(np.median(wall)) / peak,
        compile_seconds=runner.compile_seconds,
        xla_flops=cost.flops if cost else None,
        temp_bytes=cost.temp_bytes if cost else None,
        argument_bytes=cost.argument_bytes if cost else None,
        output_bytes=cost.output_bytes if cost else None,
        alias_bytes=cost.alias_bytes if cost else None,
        peak_rss_bytes=runner.peak_rss_bytes))
  for mode in (*MODES, LATENCY):
    base = next((r for r in results if r.mode == mode and r.system.startswith("ours")), None)
    for r in results:
      if base and r.mode == mode:
        r.ratio_to_ours = r.images_per_second / base.images_per_second
  return results


def memory_row(config: ml_collections.ConfigDict, system: str) -> dict[str, Any]:
  """Compile-only XLA figures of the train step (FLOPs, temp memory per image, ...)."""
  runner = ours(config, "train", system=system, compile_only=True)
  cost = runner.cost
  return {"system": system, "variant": config.model.variant,
          "resolution": input_resolution(config), "batch_size": config.batch_size,
          "dtype": config.model.dtype, "compile_seconds": runner.compile_seconds,
          "xla_flops": cost.flops, "temp_bytes": cost.temp_bytes,
          "temp_bytes_per_image": cost.temp_bytes / config.batch_size,
          "argument_bytes": cost.argument_bytes, "output_bytes": cost.output_bytes,
          "alias_bytes": cost.alias_bytes}


def _mib(n: float | None, unit: float = 2**20) -> str:
  return "" if n is None else f"{n / unit:,.1f}"


def _opt(value: float | None, fmt: str) -> str:
  return "" if value is None else format(value, fmt)


def to_markdown(results: Sequence[Measurement]) -> str:
  header = ("| system | mode | variant | res | batch | img/s median [min–max] | × ours | "
            "CPU ms/img (sys) | compile s | XLA GFLOP/step | MFU | temp MiB/img | "
            "peak RSS GiB |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in results:
    lines.append(
        f"| {r.system} | {r.mode} | {r.variant} | {r.resolution} | {r.batch_size} | "
        f"{r.images_per_second:.1f} [{r.images_per_second_min:.1f}–"
        f"{r.images_per_second_max:.1f}] | {_opt(r.ratio_to_ours, '.2f')} | "
        f"{r.cpu_ms_per_image:.1f} ({r.system_ms_per_image:.1f}) | "
        f"{_opt(r.compile_seconds, '.1f')} | "
        f"{_opt(r.xla_flops and r.xla_flops / 1e9, '.1f')} | {r.mfu:.1%} | "
        f"{_mib(r.temp_bytes and r.temp_bytes / r.batch_size)} | "
        f"{_mib(r.peak_rss_bytes, 2**30)} |")
  return "\n".join(lines)


def latency_markdown(results: Sequence[Measurement]) -> str:
  """Batch-1 rows: milliseconds per image, median and spread over the timed rounds."""
  header = "| system | variant | res | dtype | latency ms median [min–max] | ÷ ours |"
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in results:
    lines.append(f"| {r.system} | {r.variant} | {r.resolution} | {r.dtype} | "
                 f"{1e3 / r.images_per_second:.1f} [{1e3 / r.images_per_second_max:.1f}–"
                 f"{1e3 / r.images_per_second_min:.1f}] | "
                 f"{_opt(r.ratio_to_ours and 1 / r.ratio_to_ours, '.2f')} |")
  return "\n".join(lines)


def memory_markdown(rows: Sequence[dict[str, Any]]) -> str:
  header = ("| system | variant | res | batch | train temp MiB/img | argument MiB | "
            "XLA GFLOP/step | compile s |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  for r in rows:
    lines.append(f"| {r['system']} | {r['variant']} | {r['resolution']} | {r['batch_size']} | "
                 f"{_mib(r['temp_bytes_per_image'])} | {_mib(r['argument_bytes'])} | "
                 f"{r['xla_flops'] / 1e9:,.1f} | {r['compile_seconds']:.1f} |")
  return "\n".join(lines)
