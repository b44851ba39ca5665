"""Optimizers and learning-rate schedules by name, for the experiment configs.

Every method of the reproduced tables is one entry of :data:`METHODS`, built with
``build(name, learning_rate=..., **hyperparameters)``.

Conventions (the papers' reference codes):

* ``weight_decay`` of SGD-M and Adam is the *coupled* L2 of the reference code
  (``g ← g + λx`` before the moments); of AdamW and Lion it is decoupled
  (``x ← x − ηλx``), optax's convention (the product ``ηλ`` is what the
  equilibrium depends on).
* The "†" variants (AdamW†, AdamG†) apply the spherical optimizer to the grouped
  conv filters only (4-d kernels) and Adam with coupled L2 ``adam_weight_decay``
  elsewhere, through ``optax.partition``.

:func:`predicted_angular_update` and :func:`predicted_weight_norm` give the
equilibrium angular update per step and group norm of Kosson, Messmer, Jaggi,
*Rotational Equilibrium: How Weight Decay Balances Learning Across Neural Networks*,
ICML 2024, arXiv:2305.17212,
Table 1 (and Wan et al., *Spherical Motion Dynamics: Learning Dynamics of Neural
Network with Normalization, Weight Decay, and SGD*, ICLR 2021 submission, Theorem 3),
computed by ``spherax.theory.equilibrium`` from the
*scheduled* learning rate, for the methods where they are defined.

Example:

>>> import jax.numpy as jnp
>>> tx = build('sgdm', learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
>>> state = tx.init({'w': jnp.ones((3, 3, 2, 4))})
>>> round(float(predicted_angular_update('sgdm', 0.5, momentum=0.9,
...                                      weight_decay=1e-4)), 4)
0.0073
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import optax

import spherax
from spherax.theory import equilibrium

__all__ = [
    "DECAY_MASKS",
    "L2_ARGUMENT",
    "METHODS",
    "Method",
    "build",
    "conv_filter_labels",
    "decay_kernels_only",
    "predicted_angular_update",
    "predicted_weight_norm",
    "schedule",
]


def _sgdm(learning_rate, momentum=0.9, weight_decay=0.0, nesterov=False, mask=None):
  """SGD with momentum and coupled L2: ``buf ← μ buf + g + λx``, ``x ← x − η buf``."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask),
      optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
  )


def _sgd(learning_rate, weight_decay=0.0):
  """Plain SGD with coupled L2 (Roburin, de Mont-Marin, Bursuc, Marlet, Pérez, Aubry,
  *Spherical Perspective on Learning with Normalization Layers*, Neurocomputing 2022,
  arXiv:2006.13382, Fig. 2)."""
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def _adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, mask=None):
  """Adam with coupled L2 (the reference code's ``weight_decay``)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask), optax.adam(learning_rate, b1, b2, eps)
  )


def _adagrad(learning_rate, eps=1e-10, initial_accumulator_value=0.0):
  return optax.adagrad(
      learning_rate, initial_accumulator_value=initial_accumulator_value, eps=eps
  )


# The keyword under which spherax's coupled-L2 optimizers (adams, adamsrt, sgdmrt,
# rv_adam_l2) take the L2 coefficient. The experiments always call it
# ``weight_decay`` (the reference codes' name); spherax calls it
# ``l2_regularization``.
L2_ARGUMENT = "l2_regularization"


def _coupled_l2(factory, **fixed):
  """``factory`` with the experiments' ``weight_decay`` (coupled L2) passed on as
  spherax's :data:`L2_ARGUMENT`."""

  @functools.wraps(factory)
  def build_with_l2(learning_rate, *args, weight_decay=0.0, **kwargs):
    return factory(learning_rate, *args, **{L2_ARGUMENT: weight_decay}, **fixed, **kwargs)

  return build_with_l2


def conv_filter_labels(params: Any) -> Any:
  """``'sphere'`` for conv kernels (4-d leaves, grouped per filter), else ``'adam'``."""
  return jax.tree.map(lambda x: "sphere" if len(x.shape) == 4 else "adam", params)


def _dagger(inner_name: str) -> Callable[..., optax.GradientTransformation]:
  """The "†" rule: ``inner`` on conv filters, Adam (coupled L2) elsewhere."""

  def factory(learning_rate, adam_weight_decay=0.0, b1=0.9, b2=0.999, **inner_kw):
    inner = METHODS[inner_name].factory(learning_rate=learning_rate, b1=b1, b2=b2, **inner_kw)
    adam = _adam(learning_rate, b1=b1, b2=b2, weight_decay=adam_weight_decay)
    return optax.partition({"sphere": inner, "adam": adam}, conv_filter_labels)

  return factory


def _filters_then_sgd(inner_name: str) -> Callable[..., optax.GradientTransformation]:
  """``inner`` on the conv filters, SGD (``sgd_learning_rate``, coupled L2
  ``sgd_weight_decay``) on every other parameter: the comparison of Roburin et
  al. 2022, Fig. 2, gives the non-filter parameters the same SGD in all runs."""

  def factory(learning_rate, *, sgd_learning_rate, sgd_weight_decay=0.0, **inner_kw):
    inner = METHODS[inner_name].factory(learning_rate=learning_rate, **inner_kw)
    # conv_filter_labels calls every non-filter parameter 'adam'; here it gets SGD
    rest = _sgd(sgd_learning_rate, weight_decay=sgd_weight_decay)
    return optax.partition({"sphere": inner, "adam": rest}, conv_filter_labels)

  return factory


def _sgdm_eq(lr, *, momentum=0.9, weight_decay=0.0, **_):
  return equilibrium.angular_update_sgdm(lr, weight_decay, momentum)


def _adamw_eq(lr, *, b1=0.9, weight_decay=0.0, **_):
  return equilibrium.angular_update_adamw(lr, weight_decay, b1)


# Lion's β2 = 0.999 throughout Kosson et al. 2024 (App. O); optax's default is 0.99
_LION_B2 = 0.999


def _lion(learning_rate, b1=0.9, b2=_LION_B2, **kwargs):
  return optax.lion(learning_rate, b1, b2, **kwargs)


def _rv_lion(learning_rate, b1=0.9, b2=_LION_B2, **kwargs):
  return spherax.rv_lion(learning_rate, b1, b2, **kwargs)


def _lion_eq(lr, *, b1=0.9, b2=_LION_B2, weight_decay=0.0, **_):
  return equilibrium.angular_update_lion(lr, weight_decay, b1, b2)


def _adamw_norm(lr, group_size, *, weight_decay=0.0, **_):
  return equilibrium.norm_adamw(lr, weight_decay, group_size)


def _lion_norm(lr, group_size, *, b1=0.9, b2=_LION_B2, weight_decay=0.0, **_):
  return equilibrium.norm_lion(lr, weight_decay, group_size, b1, b2)


@dataclasses.dataclass(frozen=True)
class Method:
  """One optimizer of the tables: a factory and, where defined, its equilibrium."""

  factory: Callable[..., optax.GradientTransformation]
  equilibrium: Callable[..., Any] | None = None
  label: str = ""
  takes_groups: bool = False
  equilibrium_norm: Callable[..., Any] | None = None


METHODS: dict[str, Method] = {
    # optax baselines
    "sgd": Method(_sgd, label="SGD"),
    "sgdm": Method(_sgdm, _sgdm_eq, "SGD-M"),
    "adam": Method(_adam, label="Adam"),
    "adamw": Method(optax.adamw, _adamw_eq, "AdamW", equilibrium_norm=_adamw_norm),
    "adagrad": Method(_adagrad, label="AdaGrad"),
    "lion": Method(_lion, _lion_eq, "Lion", equilibrium_norm=_lion_norm),
    "lars": Method(optax.lars, label="LARS"),
    "lamb": Method(optax.lamb, label="LAMB"),
    # the variants of Roburin et al., ICLR 2021 submission (Table 2)
    "adams": Method(_coupled_l2(spherax.adams), takes_groups=True, label="AdamS"),
    "adam_wo_ab": Method(
        _coupled_l2(spherax.adamsrt, transport="reference", rescale=False),
        label="Adam w/o (ab)",
        takes_groups=True,
    ),
    "adamsrt": Method(_coupled_l2(spherax.adamsrt), takes_groups=True, label="AdamSRT"),
    "sgdmrt": Method(_coupled_l2(spherax.sgdmrt), takes_groups=True, label="SGDMRT"),
    "adamg": Method(spherax.adamg, takes_groups=True, label="AdamG"),
    "sgdg": Method(spherax.sgdg, takes_groups=True, label="SGDG"),
    "adagradg": Method(spherax.adagradg, takes_groups=True, label="AdaGradG"),
    # peers
    "adamp": Method(spherax.adamp, takes_groups=True, label="AdamP"),
    "sgdp": Method(spherax.sgdp, takes_groups=True, label="SGDP"),
    "nero": Method(spherax.nero, takes_groups=True, label="Nero"),
    # the rotational variants of Kosson et al. 2024 (§4)
    "rv_adamw": Method(spherax.rv_adamw, _adamw_eq, "RV-AdamW", takes_groups=True),
    "rv_sgdm": Method(spherax.rv_sgdm, _sgdm_eq, "RV-SGDM", takes_groups=True),
    "rv_lion": Method(_rv_lion, _lion_eq, "RV-Lion", takes_groups=True),
    "rv_adam_l2": Method(
        _coupled_l2(spherax.rv_adam_l2), _adamw_eq, "Wrapped Adam+L2", takes_groups=True
    ),
}
METHODS["adamw_dagger"] = Method(
    _dagger("adamw"), _adamw_eq, "AdamW†", equilibrium_norm=_adamw_norm
)
METHODS["adamg_dagger"] = Method(_dagger("adamg"), label="AdamG†", takes_groups=True)
METHODS["adagradg_sgd"] = Method(_filters_then_sgd("adagradg"), label="AdaGradG (SGD elsewhere)",
                                 takes_groups=True)
METHODS["adagrad_sgd"] = Method(_filters_then_sgd("adagrad"), label="AdaGrad (SGD elsewhere)")


def _method(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(
        f"experiments.optimizers: unknown method {name!r}; known: {sorted(METHODS)}"
    )
  return METHODS[name]


def decay_kernels_only(params: Any) -> Any:
  """The decay ``mask`` of timm (followed by Kosson et al. 2024): decay weights with
  ``ndim >= 2``, not gains and biases."""
  return jax.tree.map(lambda x: len(x.shape) >= 2, params)


DECAY_MASKS = {"kernels": decay_kernels_only}


def build(
    name: str, *, learning_rate, groups=None, decay_mask=None, **hyperparameters
) -> optax.GradientTransformation:
  """The optimizer ``name`` with ``learning_rate`` (float or schedule).

  ``groups`` goes to the spherical methods (spherax's ``groups=``); the optax
  baselines have no groups and ignore it. ``decay_mask`` names an entry of
  :data:`DECAY_MASKS` (``"kernels"``: no decay on gains and biases), passed on as the
  optimizer's optax-style ``mask=``.
  """
  method = _method(name)
  if method.takes_groups and groups is not None:
    hyperparameters["groups"] = groups
  if decay_mask is not None:
    if decay_mask not in DECAY_MASKS:
      raise ValueError(f"experiments.optimizers: unknown decay_mask {decay_mask!r}; "
                       f"known: {sorted(DECAY_MASKS)}")
    hyperparameters["mask"] = DECAY_MASKS[decay_mask]
  return method.factory(learning_rate=learning_rate, **hyperparameters)


def predicted_angular_update(name: str, learning_rate, **hyperparameters):
  """Equilibrium angular update per step (radians) of Kosson et al. 2024, Table 1, or ``None``.

  SGD-M (and RV-SGDM): ``sqrt(2ηλ/(1+α))``; AdamW (and RV-AdamW, wrapped Adam+L2):
  ``sqrt(2ηλ(1−β1)/(1+β1))``; Lion (and RV-Lion):
  ``sqrt(πηλ)·sqrt((1−β1)² + β1²(1−β2)/(1+β2))``.
  ``None`` for methods without a closed form (Adam+L2, the spherical variants).
  """
  method = _method(name)
  if method.equilibrium is None:
    return None
  return method.equilibrium(learning_rate, **hyperparameters)


def predicted_weight_norm(name: str, learning_rate, group_size: int, **hyperparameters):
  """Equilibrium group norm of Kosson et al. 2024, Table 1 (AdamW ``sqrt(ηC/(2λ))``, Lion
  ``sqrt(ηC/(πλ))·(...)^{-1/2}``) for a group of ``C = group_size`` elements, or
  ``None`` (SGD-M's depends on the gradient norm; RV norms are frozen at init)."""
  method = _method(name)
  if method.equilibrium_norm is None:
    return None
  return method.equilibrium_norm(learning_rate, group_size, **hyperparameters)


def schedule(
    kind: str,
    *,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    boundaries: tuple[int, ...] = (),
    factor: float = 0.1,
    warmup_epochs: float = 0.0,
    init_value: float = 1e-6,
    end_value: float = 1e-5,
) -> optax.Schedule:
  """Learning-rate schedule per step.

  * ``'constant'``: ``η``;
  * ``'multistep'``: ``η · factor^k`` after the ``k``-th epoch boundary
    (Roburin et al., *A spherical analysis of Adam with Batch Normalization*, ICLR
    2021 submission (OpenReview): ×0.1 at 135/225/315 of 405 epochs);
  * ``'cosine'``: linear warm-up from ``init_value`` over ``warmup_epochs``, then
    cosine decay per step to ``end_value`` (Kosson et al. 2024, App. O: 5 epochs from 1e-6, 1e-5).
  """
  if kind == "constant":
    return optax.constant_schedule(learning_rate)
  if kind == "multistep":
    return optax.piecewise_constant_schedule(
        learning_rate, {int(b * steps_per_epoch): factor for b in boundaries}
    )
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=init_value,
        peak_value=learning_rate,
        warmup_steps=int(warmup_epochs * steps_per_epoch),
        decay_steps=epochs * steps_per_epoch,
        end_value=end_value,
    )
  raise ValueError(f"experiments.optimizers: unknown schedule kind {kind!r}")
