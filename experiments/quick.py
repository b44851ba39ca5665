"""The quick offline reproduction: ``python -m experiments.quick``.

Checks six claims of the four papers on the digits protocol of
:mod:`experiments.configs.quick` (a BN ResNet-8, constant lr after a short
warm-up, 20% of each batch's labels re-drawn), and prints one line per claim
with the measured numbers, the threshold and a verdict computed from them:

(a) Kosson, Messmer, Jaggi, *Rotational Equilibrium: How Weight Decay Balances
    Learning Across Neural Networks*, ICML 2024, arXiv:2305.17212, §4: RV-AdamW
    and RV-SGDM rotate at the equilibrium angular update ``η̂_r`` (their Table 1)
    from the start: measured/predicted ≥ 0.9 over the whole run, ≥ 0.8 in its
    first 10% of steps;
(b) same paper, §3: AdamW† and SGD-M reach ``η̂_r`` only after a transient:
    ≥ 0.85 late (last 25% of steps), far below early (first 10%: at most 0.7×
    the late ratio);
(c) same paper, §5 (Fig. 4): Adam+L2's late angular updates are unbalanced
    across layers: per-layer spread (max/min) ≥ 3× AdamW†'s;
(d) Roburin et al., *A spherical analysis of Adam with Batch Normalization*,
    ICLR 2021 submission, Table 2: AdamS, Adam w/o (ab), AdamSRT and AdamG†
    trained in the same run, each within 0.5 points of Adam's test accuracy or
    above it;
(e) Wan et al., *Spherical Motion Dynamics*, ICLR 2021 submission, Corollary
    3.1 and §5: after the lr is divided by ``k``, SGD-M needs at least
    ``log(k)(1−α)/(4λη)`` steps to reach the new equilibrium, and
    ``spherax.rescale_norms_on_lr_drop`` (norms ÷ ``k^{1/4}``) reaches it at
    once (≤ 0.25× the bound);
(f) Roburin et al., *Spherical Perspective on Learning with Normalization
    Layers*, Neurocomputing 2022, arXiv:2006.13382, Theorem 4: SGD with L2 and
    AdaGradG with the theorem's hyperparameters (per-filter ``v₀``) follow the
    same trajectory on the sphere: per-filter ``1 − cos ≤ 1e-4`` at every step.

The predicted values come from ``spherax.theory`` (``equilibrium`` through
:func:`experiments.optimizers.predicted_angular_update`, ``smd`` and
``spherical``); the angular updates and norms are measured per conv filter by
``spherax.diagnostics`` every step and averaged per layer. The training loop is
this module's own: the whole run of one optimizer is a few ``jax.lax.scan``
chunks (one compile per optimizer, a progress line per chunk), with the label
noise the train loop of :mod:`experiments.train` does not have.

Writes ``<workdir>/results.md`` (the claim table and the per-method table) and
one figure per claim, ``<workdir>/claim_<a..f>.png``.

Example (a shortened schedule of two claims):

>>> import tempfile
>>> result = main(['--claims', 'a,f', '--steps', '100',
...                '--workdir', tempfile.mkdtemp()])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import spherax
from experiments import data, models, optimizers, plots
from experiments.configs import quick as cfg
from experiments.train import CONV_GROUPS
from spherax.theory import smd, spherical

__all__ = ["CLAIMS", "Run", "claim_lines", "main", "run_claims"]

CLAIMS = "abcdef"
# the runs each claim needs
_NEEDS = {
    "a": ("rv_adamw", "rv_sgdm"),
    "b": ("adamw_dagger", "sgdm"),
    "c": ("adam", "adamw_dagger"),
    "d": ("adam", "adams", "adam_wo_ab", "adamsrt", "adamg_dagger"),
    "e": (),
    "f": (),
}
_CHUNK = 100


@dataclasses.dataclass
class Run:
  """One trained model: per-step loss, per-layer angle (rad/step) and filter norm,
  the scheduled lr, the predicted ``η̂_r`` per step (or None), test accuracy."""

  label: str
  loss: np.ndarray
  angle: np.ndarray  # (steps, layers)
  norm: np.ndarray  # (steps, layers)
  lr: np.ndarray
  predicted: np.ndarray | None
  test_accuracy: float
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def ratio(self) -> np.ndarray:
    """measured / predicted angular update per step (mean over layers)."""
    return self.angle.mean(axis=1) / self.predicted


# ---------------------------------------------------------------- data, model


def _digits(seed: int):
  ds = data.load_dataset("digits", validation_fraction=0.0, seed=seed)
  (train,) = ds.train_batches(ds.num_train, epoch=0, augment=False)
  test = [b for b in ds.eval_batches("test", ds.num_test)]
  return train, test[0]


def _batches(num_train: int, steps: int, seed: int):
  """Indices ``(steps, B)`` (a fresh permutation per epoch) and the label noise:
  ``(steps, B)`` bool mask (probability ``LABEL_NOISE``) and random labels."""
  rng = np.random.default_rng(seed)
  per_epoch = num_train // cfg.BATCH
  epochs = -(-steps // per_epoch)
  perms = [rng.permutation(num_train)[: per_epoch * cfg.BATCH] for _ in range(epochs)]
  idx = np.concatenate(perms).reshape(-1, cfg.BATCH)[:steps]
  noisy = rng.random((steps, cfg.BATCH)) < cfg.LABEL_NOISE
  labels = rng.integers(0, 10, (steps, cfg.BATCH))
  return idx.astype(np.int32), noisy, labels.astype(np.int32)


def _model(seed: int):
  model = models.create_model("resnet8", num_classes=10, width=8, in_channels=1,
                              rngs=nnx.Rngs(seed))
  model.eval()
  eval_graphdef = nnx.split(model, nnx.Param, ...)[0]
  model.train()
  return nnx.split(model, nnx.Param, ...), eval_graphdef


def _filters(params) -> list:
  return [x for x in jax.tree.leaves(params) if x.ndim == 4]


def _layer_means(tree) -> jax.Array:
  return jnp.stack([jnp.mean(v) for v in jax.tree.leaves(tree)])


# ---------------------------------------------------------------- the loop


def _train(txs, starts, *, graphdef, rest, train, batches, label, cosine=False):
  """Trains ``len(txs)`` copies of the model side by side on the same batches
  (``starts``: their initial params); returns per-step measurements stacked
  over steps as ``(loss, angle, norm)`` per copy, and the final params."""
  images, labels = jnp.asarray(train["image"]), jnp.asarray(train["label"])

  def loss_fn(params, rest, x, y):
    model = nnx.merge(graphdef, params, rest, copy=True)
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, nnx.split(model, nnx.Param, ...)[2]

  def step(carry, batch):
    idx, noisy, random_labels = batch
    x = images[idx]
    y = jnp.where(noisy, random_labels, labels[idx])
    new_carry, outs = [], []
    for tx, (params, rest_i, opt_state) in zip(txs, carry):
      (loss, rest_i), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest_i, x, y)
      updates, opt_state = tx.update(grads, opt_state, params)
      new = optax.apply_updates(params, updates)
      angle = spherax.diagnostics.angular_update(params, new, CONV_GROUPS)
      norm = spherax.diagnostics.weight_norm(new, CONV_GROUPS)
      new_carry.append((new, rest_i, opt_state))
      outs.append((loss, _layer_means(angle), _layer_means(norm)))
    if cosine:  # per-filter cosine between copy 0 (SGD) and copy 1 (AdaGradG)
      a, b = _filters(new_carry[0][0]), _filters(new_carry[1][0])
      cos = [jnp.sum(p * q, (0, 1, 2)) / (jnp.linalg.norm(p.reshape(-1, p.shape[-1]), axis=0)
                                           * jnp.linalg.norm(q.reshape(-1, q.shape[-1]), axis=0))
             for p, q in zip(a, b)]
      outs.append(jnp.min(jnp.concatenate(cos)))
    return new_carry, outs

  chunk = jax.jit(lambda carry, xs: jax.lax.scan(step, carry, xs))
  carry = [(p, rest, tx.init(p)) for tx, p in zip(txs, starts)]
  steps = len(batches[0])
  pieces = []
  for start in range(0, steps, _CHUNK):
    xs = tuple(jnp.asarray(b[start:start + _CHUNK]) for b in batches)
    carry, outs = chunk(carry, xs)
    pieces.append(jax.device_get(outs))
    last = pieces[-1][0][0][-1]
    print(f"  {label}: step {min(start + _CHUNK, steps)}/{steps}, loss {last:.3f}",
          flush=True)
  stacked = jax.tree.map(lambda *xs: np.concatenate(xs), *pieces)
  return stacked, carry


@functools.lru_cache(maxsize=None)
def _correct_fn(eval_graphdef):
  """The jitted test-set count of correct predictions (one compile per model)."""

  @jax.jit
  def correct(params, rest, x, y, mask):
    logits = nnx.merge(eval_graphdef, params, rest, copy=True)(x)
    return jnp.sum((jnp.argmax(logits, -1) == y) * mask)

  return correct


def _evaluate(eval_graphdef, params, rest, test) -> float:
  correct = _correct_fn(eval_graphdef)
  n = float(test["mask"].sum())
  return float(correct(params, rest, test["image"], test["label"], test["mask"])) / n


def _predicted(method: str, lrs: np.ndarray, hparams: dict) -> np.ndarray | None:
  values = {lr: optimizers.predicted_angular_update(method, float(lr), **hparams)
            for lr in np.unique(lrs)}
  if any(v is None for v in values.values()):
    return None
  return np.array([float(values[lr]) for lr in lrs])


def _warmup(lr: float, steps: int):
  return optax.warmup_constant_schedule(lr / 10, lr, min(cfg.WARMUP, max(1, steps // 20)))


def _method_run(method, steps, setup) -> Run:
  lr, hparams = cfg.RUNS[method]
  sched = _warmup(lr, steps)
  groups = None if method.startswith("rv_") else CONV_GROUPS
  tx = optimizers.build(method, learning_rate=sched, groups=groups, **hparams)
  (graphdef, params, rest), eval_graphdef, train, test, batches = setup
  label = optimizers.METHODS[method].label
  (out,), ((final, final_rest, _),) = _train([tx], [params], graphdef=graphdef, rest=rest,
                                               train=train, batches=batches, label=label)
  lrs = np.asarray(sched(jnp.arange(steps)), np.float64)
  return Run(label, out[0], out[1], out[2], lrs, _predicted(method, lrs, hparams),
             _evaluate(eval_graphdef, final, final_rest, test))


def _drop_runs(setup, drop_at: int, drop_steps: int) -> tuple[Run, Run]:
  """Claim (e): SGD-M with the lr ÷ k at ``drop_at``, without / with the rescale."""
  lr, hp = cfg.DROP
  sched = optax.piecewise_constant_schedule(lr, {drop_at: 1 / cfg.DROP_FACTOR})
  on_filters = lambda p: jax.tree.map(lambda x: x.ndim == 4, p)  # L2 on the filters only

  def sgdm():
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"], mask=on_filters),
                       optax.sgd(sched, momentum=hp["momentum"]))

  txs = [sgdm(), optax.chain(sgdm(), spherax.rescale_norms_on_lr_drop(sched, groups=CONV_GROUPS))]
  (graphdef, params, rest), eval_graphdef, train, test, _ = setup
  steps = drop_at + drop_steps
  batches = _batches(len(train["label"]), steps, cfg.SEED + 1)
  outs, finals = _train(txs, [params, params], graphdef=graphdef, rest=rest, train=train,
                        batches=batches, label="SGD-M lr drop (plain | rescaled)")
  lrs = np.asarray(sched(jnp.arange(steps)), np.float64)
  pred = _predicted("sgdm", lrs, hp)
  bound = float(smd.steps_to_reequilibrate(cfg.DROP_FACTOR, lr / cfg.DROP_FACTOR,
                                           hp["weight_decay"], hp["momentum"]))
  return tuple(
      Run(name, o[0], o[1], o[2], lrs, pred, _evaluate(eval_graphdef, f[0], f[1], test),
          {"bound": bound, "drop_at": drop_at})
      for name, o, f in zip(("SGD-M, lr drop", "SGD-M, lr drop + rescale"), outs, finals))


def adagradg_start(params, learning_rate: float, l2: float):
  """AdaGradG of Theorem 4 (Roburin et al. 2022) for SGD(``learning_rate``, L2
  ``l2``) started at ``params``: returns ``(tx, state, u0)`` with the filters on
  the unit sphere (``u0 = x0/r0``), every filter's own ``v₀ = r₀⁴/(2η²β^{1/2})``
  written into the accumulator, and the other parameters on the same SGD + L2.

  The per-filter ``v₀`` is set in the state after ``init`` (``spherax.adagradg``
  takes one ``initial_accumulator_value`` for every group), so it does not
  depend on how that argument is spelled.
  """
  radius = spherax.diagnostics.weight_norm(params, CONV_GROUPS)
  h = spherical.adagradg_hyperparams(learning_rate, l2, 1.0)
  sphere = spherax.adagradg(float(h.learning_rate), decay=float(h.decay),
                            initial_accumulator_value=0.0, groups=CONV_GROUPS)
  flat = optax.chain(optax.add_decayed_weights(l2), optax.sgd(learning_rate))
  labels = lambda p: jax.tree.map(lambda x: "sphere" if x.ndim == 4 else "flat", p)
  tx = optax.partition({"sphere": sphere, "flat": flat}, labels)
  u0 = jax.tree.map(lambda x, r: x if r is None else x / r, params, radius,
                    is_leaf=lambda z: z is None)
  state = tx.init(u0)
  v0 = jax.tree.map(
      lambda r: None if r is None
      else spherical.adagradg_hyperparams(learning_rate, l2, r).initial_accumulator_value,
      radius, is_leaf=lambda z: z is None)
  is_node = lambda z: z is None or isinstance(z, optax.MaskedNode)
  nu = jax.tree.map(lambda old, new: old if new is None else new.astype(old.dtype),
                    optax.tree_utils.tree_get(state, "nu"), v0, is_leaf=is_node)
  return tx, optax.tree_utils.tree_set(state, nu=nu), u0


def _cosine_runs(setup, steps: int) -> tuple[Run, Run]:
  """Claim (f): SGD + L2 and AdaGradG (Theorem 4) on the same batches."""
  lr, l2 = cfg.SGD_FOR_ADAGRADG
  (graphdef, params, rest), eval_graphdef, train, test, _ = setup
  sgd = optax.chain(optax.add_decayed_weights(l2), optax.sgd(lr))
  adagradg, state, u0 = adagradg_start(params, lr, l2)

  started = optax.GradientTransformation(lambda p: state, adagradg.update)  # per-filter v0
  batches = _batches(len(train["label"]), steps, cfg.SEED + 2)
  outs, finals = _train([sgd, started], [params, u0], graphdef=graphdef, rest=rest,
                        train=train, batches=batches, label="SGD | AdaGradG", cosine=True)
  worst = outs[2]
  return tuple(
      Run(name, o[0], o[1], o[2], np.full(steps, lr), None,
          _evaluate(eval_graphdef, f[0], f[1], test), {"min_cosine": worst})
      for name, o, f in zip(("SGD + L2", "AdaGradG"), outs[:2], finals))


def _setup(steps: int):
  train, test = _digits(cfg.SEED)
  modelled, eval_graphdef = _model(cfg.SEED)
  return modelled, eval_graphdef, train, test, _batches(len(train["label"]), steps, cfg.SEED)


def _job(job: tuple, steps: int) -> dict:
  """Runs one job of :func:`run_claims` (in this process or a worker)."""
  kind, index, total = job[0], job[-2], job[-1]
  setup = _setup(steps)
  scale = steps / cfg.STEPS
  if kind == "method":
    print(f"[{index}/{total}] {optimizers.METHODS[job[1]].label}", flush=True)
    return {job[1]: _method_run(job[1], steps, setup)}
  if kind == "drop":
    print(f"[{index}/{total}] SGD-M with an lr drop, without and with the norm rescale",
          flush=True)
    plain, rescaled = _drop_runs(setup, max(1, round(cfg.DROP_AT * scale)),
                                 max(1, round(cfg.DROP_STEPS * scale)))
    return {"drop": plain, "drop_rescaled": rescaled}
  print(f"[{index}/{total}] SGD and AdaGradG (Theorem 4)", flush=True)
  sgd, adagradg = _cosine_runs(setup, max(1, round(cfg.COSINE_STEPS * scale)))
  return {"sgd": sgd, "adagradg": adagradg}


def run_claims(claims: str = CLAIMS, *, steps: int = cfg.STEPS, workers: int = 2) -> dict:
  """Trains what ``claims`` need on a schedule of ``steps`` steps (the (e) and (f)
  runs scaled by ``steps / STEPS``); returns ``{name: Run}``.

  The runs are independent jobs; ``workers > 1`` spreads them over that many
  processes (one per core: these small models use about one core each).
  """
  methods = list(dict.fromkeys(m for c in claims for m in _NEEDS[c]))
  # the two-model jobs first, so that no worker is left with one at the end
  kinds = [("drop",)] * ("e" in claims) + [("cosine",)] * ("f" in claims) + [
      ("method", m) for m in methods]
  jobs = [k + (i, len(kinds)) for i, k in enumerate(kinds, 1)]
  if workers <= 1 or len(jobs) == 1:
    parts = [_job(job, steps) for job in jobs]
  else:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), context) as pool:
      parts = list(pool.map(_job, jobs, [steps] * len(jobs)))
  runs = {name: run for part in parts for name, run in part.items()}
  order = methods + ["drop", "drop_rescaled", "sgd", "adagradg"]
  return {name: runs[name] for name in order if name in runs}


# ---------------------------------------------------------------- the verdicts


def _verdict(ok: bool) -> str:
  return "holds" if ok else "does not hold"


def _phases(r: Run):
  """Mean measured/predicted over the whole run, its first 10% and its last 25%
  of steps, from step 2 on: the RV wrappers centre every filter in their first
  update (Kosson et al. 2024, §4, done at init there), a one-off rotation that is
  not a training step."""
  ratio = r.ratio[1:]
  n = len(ratio)
  return (float(np.mean(ratio)), float(np.mean(ratio[: max(1, n // 10)])),
          float(np.mean(ratio[-max(1, n // 4):])))


def _late_layers(r: Run) -> np.ndarray:
  return r.angle[-max(1, len(r.angle) // 4):].mean(axis=0)


def _spread(r: Run) -> float:
  late = _late_layers(r)
  return float(late.max() / late.min())


def steps_to_equilibrium(r: Run, start: int, *, level: float, window: int = 10) -> int | None:
  """Steps after ``start`` until the ``window``-step trailing mean of measured /
  predicted first reaches ``level`` (None: never within the run)."""
  ratio = r.ratio
  for t in range(start, len(ratio)):
    if np.mean(ratio[max(start, t - window + 1): t + 1]) >= level:
      return t - start
  return None


def claim_lines(runs: dict, claims: str = CLAIMS) -> list[dict]:
  """One record per claim line: ``claim``, ``what``, ``measured``, ``threshold``,
  ``holds`` (bool, from the numbers), ``verdict``."""
  th, lines = cfg.THRESHOLDS, []

  def add(claim, what, measured, threshold, ok):
    lines.append(dict(claim=claim, what=what, measured=measured, threshold=threshold,
                      holds=bool(ok), verdict=_verdict(ok)))

  if "a" in claims:
    for m in ("rv_adamw", "rv_sgdm"):
      whole, early, _ = _phases(runs[m])
      add("a", f"{runs[m].label} at η̂_r from the start",
          f"whole run {whole:.2f}, first 10% {early:.2f} × η̂_r",
          f"≥ {th['rv_whole']} and ≥ {th['rv_early']}",
          whole >= th["rv_whole"] and early >= th["rv_early"])
  if "b" in claims:
    for m in ("adamw_dagger", "sgdm"):
      _, early, late = _phases(runs[m])
      add("b", f"{runs[m].label} reaches η̂_r after a transient",
          f"late {late:.2f}, first 10% {early:.2f} × η̂_r",
          f"late ≥ {th['base_late']}, early ≤ {th['base_early_gap']} × late",
          late >= th["base_late"] and early <= th["base_early_gap"] * late)
  if "c" in claims:
    adam, adamw = _spread(runs["adam"]), _spread(runs["adamw_dagger"])
    add("c", "Adam+L2's late angular updates unbalanced across layers",
        f"per-layer max/min {adam:.2f} (Adam+L2) vs {adamw:.2f} (AdamW†) = {adam / adamw:.2f}×",
        f"≥ {th['spread']}×", adam >= th["spread"] * adamw)
  if "d" in claims:
    base = 100 * runs["adam"].test_accuracy
    accs = {m: 100 * runs[m].test_accuracy for m in ("adams", "adam_wo_ab", "adamsrt",
                                                      "adamg_dagger")}
    add("d", "Adam's variants match or beat Adam (test accuracy, %)",
        ", ".join(f"{runs[m].label} {a:.1f}" for m, a in accs.items()) + f"; Adam {base:.1f}",
        f"each ≥ Adam − {th['variant_margin']}",
        all(a >= base - th["variant_margin"] for a in accs.values()))
  if "e" in claims:
    plain, rescaled = runs["drop"], runs["drop_rescaled"]
    start = int(np.argmax(plain.lr < plain.lr[0]))
    lr, hp = cfg.DROP
    bound = float(smd.steps_to_reequilibrate(cfg.DROP_FACTOR, lr / cfg.DROP_FACTOR,
                                             hp["weight_decay"], hp["momentum"]))
    n_plain = steps_to_equilibrium(plain, start, level=th["reach"])
    n_rescaled = steps_to_equilibrium(rescaled, start, level=th["reach"])
    fmt = lambda n: f"> {len(plain.ratio) - start}" if n is None else str(n)
    ok = (n_plain is None or n_plain >= bound) and (
        n_rescaled is not None and n_rescaled <= th["rescaled_fraction"] * bound)
    add("e", f"lr ÷ {cfg.DROP_FACTOR:g}: steps to the new equilibrium vs Corollary 3.1",
        f"{fmt(n_plain)} steps plain, {fmt(n_rescaled)} rescaled; bound {bound:.0f}",
        f"plain ≥ bound, rescaled ≤ {th['rescaled_fraction']} × bound", ok)
  if "f" in claims:
    worst = float(1 - np.min(runs["sgd"].extra["min_cosine"]))
    add("f", "SGD and AdaGradG follow one trajectory (Theorem 4)",
        f"max over steps and filters of 1 − cos = {worst:.1e} "
        f"({len(runs['sgd'].loss)} steps)", f"≤ {th['cosine']:g}", worst <= th["cosine"])
  return lines


def claims_table(lines: list[dict]) -> str:
  out = ["| claim | measured | threshold | verdict |", "|---|---|---|---|"]
  for ln in lines:
    out.append(f"| ({ln['claim']}) {ln['what']} | {ln['measured']} | {ln['threshold']} "
               f"| {ln['verdict']} |")
  return "\n".join(out)


def runs_table(runs: dict) -> str:
  out = ["| run | test acc. (%) | final loss (noisy labels) | late angle (rad/step) "
         "| η̂_r (rad/step) | late measured/η̂_r |", "|---|---|---|---|---|---|"]
  for r in runs.values():
    late = float(np.mean(r.angle[-max(1, len(r.angle) // 4):]))
    pred = "—" if r.predicted is None else f"{r.predicted[-1]:.2e}"
    ratio = "—" if r.predicted is None else f"{_phases(r)[2]:.2f}"
    out.append(f"| {r.label} | {100 * r.test_accuracy:.1f} | {np.mean(r.loss[-20:]):.3f} "
               f"| {late:.2e} | {pred} | {ratio} |")
  return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description="spherax quick reproduction on digits")
  parser.add_argument("--claims", default=",".join(CLAIMS))
  parser.add_argument("--steps", type=int, default=cfg.STEPS)
  parser.add_argument("--workdir", default="runs/quick")
  parser.add_argument("--workers", type=int, default=2, help="processes (one per core)")
  args = parser.parse_args(argv)
  claims = "".join(c for c in args.claims.split(",") if c)
  if set(claims) - set(CLAIMS):
    parser.error(f"claims are letters of {CLAIMS}, got {args.claims!r}")
  start = time.time()
  runs = run_claims(claims, steps=args.steps, workers=args.workers)
  lines = claim_lines(runs, claims)
  wall = time.time() - start
  usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
  cpu = sum(u.ru_utime + u.ru_stime for u in usage)  # this process and its workers
  os.makedirs(args.workdir, exist_ok=True)
  figures = plots.claims(runs, lines, args.workdir)
  text = (claims_table(lines) + "\n\n" + runs_table(runs)
          + f"\n\nWall time {wall:.0f} s, CPU time {cpu:.0f} s "
          f"(load average {os.getloadavg()[0]:.1f} at the end).\n")
  with open(os.path.join(args.workdir, "results.md"), "w") as f:
    f.write(text)
  print("\n" + text)
  print(f"figures: {', '.join(figures)}")
  return {"runs": runs, "lines": lines, "figures": figures, "wall_s": wall, "cpu_s": cpu}


if __name__ == "__main__":
  main()
