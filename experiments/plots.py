"""Matplotlib curves from the train loop's JSONL logs.

:func:`compare` overlays several runs (one colour per run) in four panels: the
training loss (nats, cross-entropy) and the validation accuracy (%) against the
step, the angular update per step (radians, mean over the conv layers; dashed:
the predicted equilibrium ``η̂_r`` of Kosson, Messmer, Jaggi, *Rotational Equilibrium:
How Weight Decay Balances Learning Across Neural Networks*, ICML 2024,
arXiv:2305.17212, Table 1, where defined) and the mean
conv filter norm ``||x||`` (the scale-invariant groups). :func:`layers` draws one
run's per-layer angular updates and norms (Kosson et al. 2024, Fig. 4).

Example:

>>> import json, os, tempfile
>>> d = tempfile.mkdtemp(); path = os.path.join(d, 'metrics.jsonl')
>>> recs = [{'kind': 'train', 'step': s, 'loss': 1 / s, 'accuracy': 0.5, 'lr': 0.1,
...          'angular_update': {'conv/kernel': 0.01}, 'weight_norm': {'conv/kernel': 1.0},
...          'predicted_angular_update': 0.01} for s in (1, 2)]
>>> with open(path, 'w') as f:
...   f.write('\\n'.join(json.dumps(r) for r in recs)) and None
>>> compare({'sgdm': path}, os.path.join(d, 'curves.png'))
'.../curves.png'
"""

from __future__ import annotations

import glob
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["claims", "compare", "layers", "read", "trajectories", "trajectory_cosine"]


def read(path: str) -> list[dict]:
  """The records of a metrics.jsonl file."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _series(records, kind, key):
  rows = [r for r in records if r["kind"] == kind and r.get(key) is not None]
  return np.array([r["step"] for r in rows]), rows


def compare(runs: dict[str, str], out_path: str) -> str:
  """Overlays the runs ``{label: metrics.jsonl}``; saves and returns ``out_path``."""
  fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
  (ax_loss, ax_acc), (ax_ang, ax_norm) = axes
  for i, (label, path) in enumerate(runs.items()):
    color = f"C{i % 10}"
    records = read(path)
    steps, rows = _series(records, "train", "loss")
    ax_loss.plot(steps, [r["loss"] for r in rows], color=color, label=label, lw=1)
    vsteps, vrows = _series(records, "eval", "accuracy")
    ax_acc.plot(vsteps, [100 * r["accuracy"] for r in vrows], color=color, label=label, marker=".")
    ang = [np.mean(list(r["angular_update"].values())) for r in rows if r["angular_update"]]
    if ang:
      ax_ang.plot(steps[: len(ang)], ang, color=color, label=label, lw=1)
      ax_norm.plot(steps, [np.mean(list(r["weight_norm"].values())) for r in rows],
                   color=color, label=label, lw=1)
    psteps, prows = _series(records, "train", "predicted_angular_update")
    if prows:
      ax_ang.plot(psteps, [r["predicted_angular_update"] for r in prows], color=color, ls="--",
                  lw=1.5, label=f"{label} (predicted)")
  ax_loss.set(xlabel="step", ylabel="training loss (cross-entropy, nats)", yscale="log")
  ax_acc.set(xlabel="step", ylabel="validation accuracy (%)")
  ax_ang.set(xlabel="step", ylabel="angular update per step (rad), mean over conv layers",
             yscale="log")
  ax_norm.set(xlabel="step", ylabel="mean conv filter norm ||x||")
  for ax in axes.flat:
    ax.grid(alpha=0.3)
  ax_ang.legend(fontsize=6, ncol=2)
  ax_loss.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)
  plt.close(fig)
  return out_path


def layers(path: str, out_path: str, title: str = "") -> str:
  """One run's per-layer angular update (rad/step) and filter norm against the step."""
  records = read(path)
  steps, rows = _series(records, "train", "angular_update")
  names = list(rows[0]["angular_update"]) if rows else []
  fig, (ax_ang, ax_norm) = plt.subplots(1, 2, figsize=(11, 4))
  cmap = plt.get_cmap("viridis")
  for j, name in enumerate(names):
    color = cmap(j / max(len(names) - 1, 1))
    ax_ang.plot(steps, [r["angular_update"][name] for r in rows], color=color, lw=0.8)
    ax_norm.plot(steps, [r["weight_norm"][name] for r in rows], color=color, lw=0.8, label=name)
  psteps, prows = _series(records, "train", "predicted_angular_update")
  if prows:
    ax_ang.plot(psteps, [r["predicted_angular_update"] for r in prows], "k--", label="predicted")
    ax_ang.legend(fontsize=7)
  ax_ang.set(xlabel="step", ylabel="angular update per step (rad)", yscale="log", title=title)
  ax_norm.set(xlabel="step", ylabel="mean filter norm ||x||", title=title)
  if len(names) <= 12:
    ax_norm.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)
  plt.close(fig)
  return out_path


def _snapshots(workdir: str) -> dict[int, str]:
  files = sorted(glob.glob(os.path.join(workdir, "snapshots", "step_*.npz")))
  return {int(os.path.basename(f)[5:12]): f for f in files}


def trajectory_cosine(workdir_a: str, workdir_b: str) -> tuple[np.ndarray, np.ndarray]:
  """Steps and mean cosine similarity ``<x_a, x_b>/(||x_a|| ||x_b||)`` over all conv
  filters (per output unit, last axis) of two runs' snapshots at common steps
  (Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry, *Spherical Perspective on
  Learning with Normalization Layers*, Neurocomputing 2022, arXiv:2006.13382, Fig. 2:
  SGD vs AdaGradG stays ≈ 1, SGD vs AdaGrad drifts)."""
  a, b = _snapshots(workdir_a), _snapshots(workdir_b)
  steps = sorted(set(a) & set(b))
  out = []
  for step in steps:
    with np.load(a[step]) as fa, np.load(b[step]) as fb:
      cosines = []
      for name in fa.files:
        xa = fa[name].reshape(-1, fa[name].shape[-1]).astype(np.float64)
        xb = fb[name].reshape(-1, fb[name].shape[-1]).astype(np.float64)
        den = np.linalg.norm(xa, axis=0) * np.linalg.norm(xb, axis=0)
        cosines.append((xa * xb).sum(0) / np.maximum(den, 1e-30))
      out.append(np.concatenate(cosines).mean())
  return np.array(steps), np.array(out)


def trajectories(reference: str, others: dict[str, str], out_path: str) -> str:
  """Cosine similarity of each run in ``others`` to the ``reference`` run's filters."""
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, workdir in others.items():
    steps, cos = trajectory_cosine(reference, workdir)
    ax.plot(steps, cos, marker=".", label=label)
  ax.set(xlabel="step", ylabel="mean filter cosine similarity to the reference run")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out_path, dpi=120)
  plt.close(fig)
  return out_path


# ---------------------------------------------------------------- quick claims

_DPI = 120


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=_DPI)
  plt.close(fig)
  return path


def _angle_panel(ax, runs, names, title):
  for i, name in enumerate(names):
    r = runs[name]
    steps = np.arange(1, len(r.loss) + 1)
    ax.plot(steps, r.angle.mean(axis=1), color=f"C{i}", lw=1, label=f"{r.label} measured")
    if r.predicted is not None:
      ax.plot(steps, r.predicted, color=f"C{i}", ls="--", lw=1.5,
              label=f"{r.label} predicted η̂_r")
  ax.set_xlabel("step")
  ax.set_ylabel("angular update (rad/step), mean over conv layers")
  ax.set_title(title)
  ax.legend(fontsize=8)


def claims(runs: dict, lines: list[dict], workdir: str) -> list[str]:
  """One figure per claim of :mod:`experiments.quick` (``runs``: its ``Run``
  records, ``lines``: its claim lines); returns the paths written."""
  verdict = {}
  for ln in lines:
    verdict.setdefault(ln["claim"], []).append(ln["verdict"])
  title = lambda c, text: f"({c}) {text}: {' / '.join(verdict[c])}"
  paths = []
  if "a" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _angle_panel(ax, runs, ("rv_adamw", "rv_sgdm"), title("a", "RV at η̂_r from the start"))
    paths.append(_save(fig, os.path.join(workdir, "claim_a.png")))
  if "b" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _angle_panel(ax, runs, ("adamw_dagger", "sgdm"), title("b", "transient, then η̂_r"))
    paths.append(_save(fig, os.path.join(workdir, "claim_b.png")))
  if "c" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    adam, adamw = runs["adam"], runs["adamw_dagger"]
    late = lambda r: r.angle[-max(1, len(r.angle) // 4):].mean(axis=0)
    layers = np.arange(adam.angle.shape[1])
    ax.bar(layers - 0.2, late(adam), width=0.4, color="C1", label="Adam+L2")
    ax.bar(layers + 0.2, late(adamw), width=0.4, color="C0", label="AdamW†")
    ax.axhline(adamw.predicted[-1], color="C0", ls="--", label="AdamW† predicted η̂_r")
    ax.set_xlabel("conv layer (input → output)")
    ax.set_ylabel("late angular update (rad/step)")
    ax.set_title(title("c", "per-layer balance"))
    ax.legend(fontsize=8)
    paths.append(_save(fig, os.path.join(workdir, "claim_c.png")))
  if "d" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    names = ("adam", "adams", "adam_wo_ab", "adamsrt", "adamg_dagger")
    accs = [100 * runs[n].test_accuracy for n in names]
    ax.bar(range(len(names)), accs, color=[f"C{i}" for i in range(len(names))])
    ax.axhline(accs[0], color="k", ls="--", label="Adam (the reference the claim compares to)")
    ax.set_xticks(range(len(names)), [runs[n].label for n in names])
    ax.set_ylim(min(accs) - 3, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title("d", "Adam's variants"))
    ax.legend(fontsize=8)
    paths.append(_save(fig, os.path.join(workdir, "claim_d.png")))
  if "e" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    _angle_panel(ax, runs, ("drop", "drop_rescaled"), title("e", "lr drop"))
    plain = runs["drop"]
    start = int(np.argmax(plain.lr < plain.lr[0]))
    ax.axvline(start, color="gray", lw=0.8)
    ax.axvline(start + plain.extra["bound"], color="k", ls=":",
               label="drop + Corollary 3.1 bound (steps)")
    ax.legend(fontsize=8)
    ax.set_yscale("log")
    paths.append(_save(fig, os.path.join(workdir, "claim_e.png")))
  if "f" in verdict:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    gap = np.maximum(1 - runs["sgd"].extra["min_cosine"], 1e-12)
    ax.semilogy(np.arange(1, len(gap) + 1), gap, label="max over filters of 1 − cos")
    ax.axhline(1e-4, color="k", ls="--", label="threshold 1e-4 (Theorem 4 predicts 0)")
    ax.set_xlabel("step")
    ax.set_ylabel("1 − cos(SGD filter, AdaGradG filter) (dimensionless)")
    ax.set_title(title("f", "SGD vs AdaGradG"))
    ax.legend(fontsize=8)
    paths.append(_save(fig, os.path.join(workdir, "claim_f.png")))
  return paths
