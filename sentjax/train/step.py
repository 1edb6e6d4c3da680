"""The train state and the pure, jit-compiled train step on a ``data`` mesh.

State is a plain dict (big_vision style)::

  {"params": {"model": encoder+pooler params, "head"?: objective head},
   "opt_state": optax state, "step": int32 [], "rng": uint32 [2] raw key,
   "data_pos": int32 [] global batches consumed}

The batch is sharded over ``data`` (``P("data")``); the loss is written on the global batch, so
XLA's collectives give each device every in-batch negative and the exact gradient. Parameters and
optimizer state are replicated (``P()``), or placed by ``state_sharding`` (FSDP / ZeRO-3,
:mod:`sentjax.parallel.sharding`): stored sharded between steps, all-gathered for the
forward/backward, the gradient constrained back to the parameter shards (a reduce-scatter) and
AdamW applied shard by shard. Same arithmetic as the replicated step (docs/fsdp.md).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from sentjax import rng as rng_lib

GradFn = Callable[[Any, dict, jax.Array], tuple[tuple[jax.Array, dict], Any]]


# ----------------------------------------------------------------------------- mesh

def make_data_mesh(num_devices: int = -1, devices=None) -> jax.sharding.Mesh:
    """1-D mesh with axis ``data`` over ``num_devices`` (-1: all, across processes).

    Auto axis types: the loss is plain global-batch code and XLA chooses the collectives.
    """
    devices = list(devices if devices is not None else jax.devices())
    n = len(devices) if num_devices in (-1, None) else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"mesh.data={num_devices} but {len(devices)} devices are visible; "
                         "use -1 for all of them.")
    return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices[:n])


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_global_batch(global_batch: int, mesh, accum_steps: int = 1) -> None:
    """Raises if the global batch cannot be split evenly over devices (and micro-batches)."""
    n = mesh.devices.size
    if global_batch < n or global_batch % n:
        raise ValueError(f"Global batch size {global_batch} must be a positive multiple of the "
                         f"{n} devices of the mesh (each device needs whole examples); set "
                         f"--config.batch_size to a multiple of {n}, e.g. {max(n, global_batch // n * n or n)}.")
    if global_batch % (n * accum_steps):
        raise ValueError(f"batch_size {global_batch} must be divisible by devices x accum_steps = "
                         f"{n} x {accum_steps}.")


# ----------------------------------------------------------------------------- state

def init_state(params: Any, tx: optax.GradientTransformation, seed: int) -> dict:
    """Fresh state dict (host arrays); place it with ``jax.device_put(state, replicated(mesh))``."""
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(rng_lib.key(seed)).astype(jnp.uint32),
            "data_pos": jnp.zeros((), jnp.int32)}


def step_rng(state_rng: jax.Array, step: int | jax.Array) -> jax.Array:
    """Dropout key of a step: fold_in(key(seed), step); a pure function of (seed, step)."""
    return jax.random.fold_in(rng_lib.wrap(state_rng), step)


# ----------------------------------------------------------------------------- gradients

def _micro_batches(batch: dict, accum: int, global_batch: int) -> dict:
    """[B*r, ...] leaves (r rows per example, e.g. k hard negatives) -> [accum, B/accum*r, ...];
    micro-batch m takes examples i with i % accum == m, so each keeps an even share of every
    device's rows (no resharding)."""
    def split(x):
        r = x.shape[0] // global_batch
        y = x.reshape((global_batch // accum, accum, r) + x.shape[1:])
        y = jnp.moveaxis(y, 1, 0)
        return y.reshape((accum, global_batch // accum * r) + x.shape[1:])
    return jax.tree.map(split, batch)


def accumulate(grad_fn: GradFn, accum: int, global_batch: int) -> GradFn:
    """Gradient accumulation over ``accum`` equal micro-batches (mean of their losses/grads).

    Exact only for losses that are means of per-example terms: it never adds negatives."""
    if accum <= 1:
        return grad_fn

    def fn(params, batch, rng):
        micro = _micro_batches(batch, accum, global_batch)

        def body(carry, xs):
            i, mb = xs
            (loss, metrics), grads = grad_fn(params, mb, jax.random.fold_in(rng, i))
            return jax.tree.map(jnp.add, carry, (loss, metrics, grads)), None
        zero = jax.eval_shape(lambda: grad_fn(params, jax.tree.map(lambda x: x[0], micro), rng))
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (zero[0][0], zero[0][1], zero[1]))
        (loss, metrics, grads), _ = jax.lax.scan(body, zero, (jnp.arange(accum), micro))
        scale = lambda t: jax.tree.map(lambda x: x / accum, t)  # noqa: E731
        return (scale(loss), scale(metrics)), scale(grads)
    return fn


# ----------------------------------------------------------------------------- step

def make_train_step(grad_fn: GradFn | Callable[[Any], GradFn], tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, frozen: bool = False,
                    param_sharding: Any = None) -> Callable:
    """Pure ``(state, batch, rng) -> (state, metrics)``; compile with ``jit_train_step``.

    ``frozen=True`` (LoRA): ``state["frozen"]`` holds parameters that are used but never trained
    (the base model) and ``grad_fn(state["frozen"])`` is the GradFn of ``state["params"]``; the
    frozen tree is a traced argument (not a constant baked into the program), passes through
    unchanged and gets neither gradients nor optimizer state.

    A step whose loss or gradient is not finite leaves parameters and optimizer state untouched
    and reports ``metrics["nonfinite"] = 1`` (the loop stops on it); it is never applied silently.
    The check is ``grad_fn``'s own ``metrics["nonfinite"]`` where it reports one
    (``sentjax.parallel.global_grads.make_grad_fn`` does), so it runs once per step.
    ``param_sharding``: the parameters' NamedShardings when they are stored sharded (FSDP); the
    gradient is then computed by :func:`sharded_grads`.
    """
    from sentjax.parallel.finite import all_finite, select_if_finite
    if param_sharding is not None:
        if frozen:
            raise ValueError("a frozen base (LoRA) with sharded parameters is not supported.")
        grad_fn = sharded_grads(grad_fn, param_sharding)  # type: ignore[arg-type]

    def train_step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        params, opt_state = state["params"], state["opt_state"]
        fn: GradFn = grad_fn(state["frozen"]) if frozen else grad_fn  # type: ignore[call-arg,assignment]
        (loss, metrics), grads = fn(params, batch, rng)
        metrics = dict(metrics)
        flag = metrics.pop("nonfinite", None)
        finite = all_finite(loss, grads) if flag is None else flag == 0
        updates, new_opt_state = tx.update(grads, opt_state, params)
        params, opt_state = select_if_finite(finite, (optax.apply_updates(params, updates), new_opt_state),
                                             (params, opt_state))
        metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                       nonfinite=jnp.logical_not(finite).astype(jnp.float32))
        if schedule is not None:
            metrics["lr"] = schedule(state["step"])
        new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
                     "rng": state["rng"], "data_pos": state["data_pos"] + 1}
        if frozen:
            new_state["frozen"] = state["frozen"]
        return new_state, metrics
    return train_step


def sharded_grads(grad_fn: GradFn, param_sharding: Any) -> GradFn:
    """ZeRO-3 around ``grad_fn``: the stored parameter shards are all-gathered (a replicated
    sharding constraint) for the forward/backward, and the gradient is constrained to the
    parameters' shards, so XLA reduce-scatters it and the optimizer runs on shards."""
    def fn(params, batch, rng):
        full = jax.tree.map(lambda x, s: jax.lax.with_sharding_constraint(x, replicated(s.mesh)),
                            params, param_sharding)
        (loss, metrics), grads = grad_fn(full, batch, rng)
        return (loss, metrics), jax.lax.with_sharding_constraint(grads, param_sharding)
    return fn


def state_sharding(state: dict, mesh, tx: optax.GradientTransformation | None = None,
                   param_sharding: Any = None) -> dict:
    """NamedShardings of a state dict: ``param_sharding`` for the parameters (None: replicated),
    the optimizer state like its parameters (needs ``tx``), everything else replicated."""
    rep = replicated(mesh)
    out = jax.tree.map(lambda _: rep, state)
    if param_sharding is not None:
        from sentjax.parallel.sharding import opt_state_shardings
        out["params"] = param_sharding
        out["opt_state"] = opt_state_shardings(tx, state["opt_state"], param_sharding, mesh)
    return out


def jit_train_step(train_step: Callable, mesh, state_sharding: Any = None) -> Callable:
    """jit with the state donated and the batch sharded on ``data``; the state replicated in and
    out, or placed by ``state_sharding`` (a pytree of NamedSharding, :func:`state_sharding`)."""
    rep = replicated(mesh)
    st = rep if state_sharding is None else state_sharding
    return jax.jit(train_step, donate_argnames=("state",),
                   in_shardings=(st, batch_sharded(mesh), rep), out_shardings=(st, rep))


def make_encoder(embed, tokenizer, mesh, batch_size: int, prompt: str = "",
                 prompt_length: int | None = None):
    """``encode(params, texts) -> np [n, dim]`` with replicated params and bucketed batches;
    ``prompt`` is prepended to every text (``prompt_length``: its tokens, left out of the pooling)."""
    rep = replicated(mesh)
    fwd = jax.jit(lambda p, b: embed(p, b, None), out_shardings=rep)

    def encode(params, texts):
        outs = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i:i + batch_size])
            n = len(chunk)
            chunk += [""] * (batch_size - n)  # one compiled shape per length bucket
            tok = tokenizer([prompt + t for t in chunk] if prompt else chunk)
            if prompt_length is not None:
                tok["prompt_length"] = np.full(batch_size, prompt_length, np.int32)
            tok = {k: jax.make_array_from_callback(v.shape, rep, lambda idx, v=v: v[idx]) for k, v in tok.items()}
            outs.append(to_host(fwd(params, tok))[:n])
        return np.concatenate(outs).astype(np.float64)
    return encode


def to_host(tree: Any) -> Any:
    """Device arrays (replicated or sharded) -> NumPy (works in multi-process runs)."""
    from sentjax.parallel.sharding import host_array
    return jax.tree.map(host_array, tree)
