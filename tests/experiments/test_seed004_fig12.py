"""The Fig. 12 protocol of Kosson et al. 2024 (Appendix N / App. O "Imbalanced Rotation")."""

import jax.numpy as jnp
import numpy as np

from experiments import optimizers
from experiments.configs import seed004_fig12 as fig12


def test_protocol_values_are_the_papers():
  runs = fig12.runs()
  assert len(runs) == 2 * len(fig12.points()) * 9
  assert {c.learning_rate for c in runs} == set(fig12.PAPER_LRS + fig12.EXTRA_LRS)
  assert fig12.PAPER_LRS == (2.7e-3, 8.3e-3, 2.5e-2, 5e-2, 1e-1, 3e-1, 0.09, 4.5)
  for cfg in runs:
    assert (cfg.model, cfg.dataset, cfg.validation_fraction) == ("resnet18", "cifar10", 0.1)
    assert (cfg.method, cfg.epochs, cfg.batch_size) == ("rv_adamw", 200, 128)
    assert cfg.hparams.weight_decay == 0.01
    assert (cfg.schedule.kind, cfg.schedule.warmup_epochs) == ("cosine", 5)
  points = fig12.points()
  assert [p for p, f in points if f == 10.0] == list(fig12.FRACTIONS)  # Fig. 12 middle
  assert sorted(f for p, f in points if p == 0.5) == sorted(fig12.FACTORS)  # Fig. 12 right
  assert min(fig12.FACTORS) == 1.0 and max(fig12.FACTORS) == 10.0


def test_imbalanced_rotation_scales_the_first_units_of_each_layer():
  """Through the experiments' optimizer: at the first step (Ŝ = ||Δ||²) each unit
  rotates by arctan(s η̂_r), s = 1/f for the first round(p·C) units, 1 elsewhere."""
  rng = np.random.default_rng(0)
  params = {"conv": jnp.asarray(rng.normal(size=(3, 3, 2, 8)), jnp.float32),
            "bias": jnp.zeros(8, jnp.float32)}
  grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
  scale = fig12.ImbalancedRotation(0.25, 0.1)
  np.testing.assert_allclose(scale(params)["conv"], [0.1, 0.1] + [1.0] * 6)
  lr = 0.05
  tx = optimizers.build("rv_adamw", learning_rate=lr, weight_decay=0.01, rotation_scale=scale)
  u, _ = tx.update(grads, tx.init(params), params)
  x = np.asarray(params["conv"], np.float64).reshape(-1, 8)
  new = x + np.asarray(u["conv"], np.float64).reshape(-1, 8)
  start = x - x.mean(0)
  cos = (start * new).sum(0) / np.linalg.norm(start, axis=0) / np.linalg.norm(new, axis=0)
  eta_r = optimizers.predicted_angular_update("rv_adamw", lr, weight_decay=0.01)
  want = np.arctan(np.asarray(scale(params)["conv"]) * eta_r)
  np.testing.assert_allclose(np.arccos(np.clip(cos, -1, 1)), want, rtol=2e-3)
