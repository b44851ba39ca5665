"""Tests for spherax.groups: specs, default rule, path rules, validation, masking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from spherax import groups
from spherax.groups import GroupSpec


def _params():
  return {
      "conv": {"kernel": jnp.ones((3, 3, 4, 8)), "bias": jnp.ones(8)},
      "head": {"kernel": jnp.ones((8, 10)), "bias": jnp.ones(10)},
  }


def test_default_rule_groups_per_output_unit_and_skips_vectors():
  layouts = groups.resolve(None, _params())
  paths = groups.leaf_paths(_params())
  got = {p: (None if l is None else (l.num_groups, l.group_size)) for p, l in zip(paths, layouts)}
  assert got == {
      "conv/bias": None,
      "conv/kernel": (8, 36),
      "head/bias": None,
      "head/kernel": (10, 8),
  }


@pytest.mark.parametrize(
    "spec, shape, stat_shape, size",
    [
        (groups.per_output(), (3, 3, 4, 8), (1, 1, 1, 8), 36),
        (groups.whole(), (3, 3, 4, 8), (1, 1, 1, 1), 288),
        (groups.per_output(2), (16, 4, 8), (1, 4, 8), 16),
        (groups.stacked(), (5, 16, 8), (5, 1, 8), 16),
        (groups.channel_groups(4), (3, 3, 4, 8), (1, 1, 1, 4, 1), 72),
        (GroupSpec((0,)), (6, 5), (6, 1), 5),
    ],
)
def test_layout_matches_numpy_grouping(spec, shape, stat_shape, size):
  layout = spec.layout(shape)
  assert layout.stat_shape == stat_shape
  assert layout.group_size == size
  assert layout.num_groups * layout.group_size == np.prod(shape)


def test_channel_groups_gathers_contiguous_output_units():
  x = np.arange(2 * 6, dtype=np.float32).reshape(2, 6)
  layout = groups.channel_groups(3).layout(x.shape)
  from spherax import geometry

  sums = np.asarray(geometry.group_sum(jnp.asarray(x), layout)).ravel()
  expected = [x[:, 2 * g : 2 * g + 2].sum() for g in range(3)]
  np.testing.assert_allclose(sums, expected)


def test_by_path_first_match_wins_and_strips_nnx_value_suffix():
  params = {"head": {"kernel": {"value": jnp.ones((8, 10))}}, "attn": {"q": jnp.ones((8, 2, 4))}}
  rules = groups.by_path([("^head/kernel$", None), ("attn/", groups.per_output(2))])
  layouts, paths = groups.resolve_with_paths(rules, params)
  assert paths == ["attn/q", "head/kernel"]
  assert layouts[0].stat_shape == (1, 2, 4) and layouts[1] is None


def test_spec_tree_and_callable_agree():
  params = _params()
  tree = {
      "conv": {"kernel": groups.whole(), "bias": None},
      "head": {"kernel": None, "bias": None},
  }
  from_tree = groups.resolve(tree, params)
  from_fn = groups.resolve(groups.from_params(lambda p: tree), params)
  assert from_tree == from_fn
  assert [l is not None for l in from_tree] == [False, True, False, False]


@pytest.mark.parametrize(
    "spec, message",
    [
        (GroupSpec((4,)), "out of range"),
        (groups.channel_groups(3), "cannot be split"),
        (GroupSpec((-1, 3)), "repeated"),
    ],
)
def test_bad_specs_fail_naming_the_path(spec, message):
  params = {"block": {"conv": jnp.ones((3, 3, 4, 8))}}
  with pytest.raises(ValueError, match=f"block/conv.*{message}"):
    groups.resolve({"block": {"conv": spec}}, params)


def test_min_group_size_names_the_path():
  params = {"dense": jnp.ones((1, 4))}
  with pytest.raises(ValueError, match="'dense'.*at least 2"):
    groups.resolve({"dense": groups.per_output()}, params, min_group_size=2, who="transport")


def test_mismatched_spec_tree_is_a_clear_error():
  with pytest.raises(ValueError, match="does not match"):
    groups.resolve({"a": None}, {"a": jnp.ones(2), "b": jnp.ones(2)})


def test_single_spec_is_rejected_with_hint():
  with pytest.raises(TypeError, match="by_path"):
    groups.resolve(groups.whole(), _params())


def test_full_spec_tree_works_on_masked_params():
  params = _params()
  mask = jax.tree.map(lambda p: p.ndim > 1, params)
  masked = jax.tree.map(lambda m, p: p if m else optax.MaskedNode(), mask, params)
  tree = {
      "conv": {"kernel": groups.per_output(), "bias": None},
      "head": {"kernel": groups.whole(), "bias": None},
  }
  layouts = groups.resolve(tree, masked)
  assert [l.path for l in layouts] == ["conv/kernel", "head/kernel"]
  assert layouts[1].num_groups == 1


def test_shape_dtype_structs_resolve():
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), _params())
  assert groups.resolve(None, params) == groups.resolve(None, _params())


def test_tree_map_groups_passes_layouts_and_keeps_structure():
  params = _params()
  layouts = groups.resolve(None, params)
  out = groups.tree_map_groups(
      lambda l, p, q: (p + q).sum() if l is None else jnp.asarray(l.group_size),
      layouts,
      params,
      params,
  )
  assert jax.tree.structure(out) == jax.tree.structure(params)
  assert int(out["conv"]["kernel"]) == 36 and float(out["conv"]["bias"]) == 16.0


def test_path_rules_are_not_callable_so_inject_hyperparams_keeps_them():
  assert not callable(groups.by_path({"x": None}))


def test_default_rule_skips_integer_bool_empty_and_one_element_groups():
  params = {
      "ids": jnp.zeros((4, 8), jnp.int32),
      "flags": jnp.zeros((4, 8), bool),
      "row": jnp.ones((1, 8)),          # (1, C): groups of one element
      "pos": jnp.ones((1, 4, 32)),      # groups of 4 elements: grouped
      "e1": jnp.ones((5, 0)),
      "e2": jnp.ones((0, 5)),
      "c": jnp.ones((3, 2), jnp.complex64),
      "h": jnp.ones((3, 2), jnp.bfloat16),
  }
  layouts, paths = groups.resolve_with_paths(None, params)
  got = {p: l is not None for p, l in zip(paths, layouts)}
  assert got == {"ids": False, "flags": False, "row": False, "pos": True, "e1": False,
                 "e2": False, "c": True, "h": True}


def test_explicit_spec_on_integer_leaf_is_an_error_naming_the_path():
  params = {"emb": {"ids": jnp.zeros((4, 8), jnp.int32)}}
  with pytest.raises(ValueError, match="'emb/ids'.*int32"):
    groups.resolve({"emb": {"ids": groups.per_output()}}, params, who="adamg")
  with pytest.raises(ValueError, match="'emb/ids'"):
    groups.resolve(groups.by_path({"ids": groups.whole()}), params)


def test_explicit_spec_on_empty_leaf_is_validated_then_ungrouped():
  assert groups.resolve({"w": groups.per_output()}, {"w": jnp.ones((0, 5))}) == [None]
  with pytest.raises(ValueError, match="out of range"):
    groups.resolve({"w": GroupSpec((3,))}, {"w": jnp.ones((0, 5))})


def test_bare_function_is_refused_with_the_wrapper_to_use():
  with pytest.raises(TypeError, match="from_params"):
    groups.resolve(lambda p: None, _params(), who="adamg")
  with pytest.raises(TypeError, match="from_params"):
    groups.from_params(None)


def test_from_params_survives_inject_hyperparams():
  import spherax

  tree = {"conv": {"kernel": None, "bias": None}, "head": {"kernel": None, "bias": None}}
  opt = optax.inject_hyperparams(spherax.adamg)(learning_rate=0.1, groups=groups.from_params(lambda p: tree))
  params = _params()
  updates, _ = opt.update(_params(), opt.init(params), params)
  # nothing grouped: plain Adam on every leaf (a grouped kernel would keep unit norm)
  new = optax.apply_updates(params, updates)
  np.testing.assert_allclose(new["conv"]["kernel"], 0.9, rtol=1e-6)


def test_bad_by_path_pattern_names_the_pattern():
  with pytest.raises(ValueError, match=r"bad pattern '\[head'"):
    groups.by_path({"[head": None})


# ``groups=`` under ``optax.inject_hyperparams`` without ``static_args``: every kind of
# value either works or is an error naming ``static_args``, never the default rule.

_INJ_PARAMS = {"conv": {"kernel": jnp.arange(1.0, 25.0).reshape(2, 3, 4), "bias": jnp.ones(4)},
               "head": {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4), "bias": jnp.ones(4)}}
_INJ_SPECS = {"conv": {"kernel": groups.per_output(), "bias": None},
              "head": {"kernel": None, "bias": None}}


def _head_excluded(path, leaf):
  return None if path.startswith("head/") else groups.default_rule(path, leaf)


def _injected_update(groups_value, **inject_kwargs):
  import spherax

  opt = optax.inject_hyperparams(spherax.rv_adamw, **inject_kwargs)(
      learning_rate=0.1, groups=groups_value)
  grads = jax.tree.map(jnp.cos, _INJ_PARAMS)
  return opt.update(grads, opt.init(_INJ_PARAMS), _INJ_PARAMS)[0], grads


@pytest.mark.parametrize("groups_value", [
    groups.by_path({"^head/": None}),
    groups.by_path({"": _head_excluded}),
    groups.from_params(lambda p: _INJ_SPECS),
    _INJ_SPECS,
], ids=["by_path", "by_path_rule_fn", "from_params", "spec_tree"])
def test_rule_objects_and_spec_trees_work_under_inject_hyperparams(groups_value):
  updates, grads = _injected_update(groups_value)
  # The excluded head is not rotational: rv_adamw gives it optax.adamw's update.
  adamw = optax.adamw(0.1, weight_decay=1e-2)
  head = {k: _INJ_PARAMS["head"][k] for k in ("kernel", "bias")}
  want, _ = adamw.update(grads["head"], adamw.init(head), head)
  np.testing.assert_allclose(updates["head"]["kernel"], want["kernel"], rtol=1e-5, atol=1e-7)
  # The conv kernel is rotational (the default rule would also group the head).
  conv = _INJ_PARAMS["conv"]["kernel"]
  adamw_conv, _ = adamw.update(grads["conv"]["kernel"], adamw.init(conv), conv)
  assert not np.allclose(updates["conv"]["kernel"], adamw_conv, rtol=1e-3)


@pytest.mark.parametrize("bare", [
    lambda p: jax.tree.map(lambda x: groups.per_output() if x.ndim == 3 else None, p),
    lambda p: _INJ_SPECS,
    lambda p: groups.per_output(),
], ids=["returns_None_for_the_count", "returns_a_fixed_tree", "returns_a_spec"])
def test_bare_function_under_inject_hyperparams_is_an_error_naming_static_args(bare):
  # The count is a 0-d array: the first function maps it to None, which used to
  # mean the default rule (the head silently rotational); the second used to work
  # eagerly and fail under jit on a GroupSpec in the hyperparams state.
  with pytest.raises(TypeError, match=r"rv_adamw: groups= was called as a schedule.*static_args"):
    _injected_update(bare)


def test_bare_path_leaf_rule_under_inject_hyperparams_fails_loudly():
  # optax calls it with the count alone: Python's own error, before spherax runs.
  with pytest.raises(TypeError, match="missing 1 required positional argument"):
    _injected_update(_head_excluded)
  # Named in static_args it reaches spherax, which refuses it with the wrapper to use.
  with pytest.raises(TypeError, match=r"by_path\(\{'': rule\}\)"):
    _injected_update(_head_excluded, static_args=("groups",))


def test_mask_function_under_inject_hyperparams_needs_static_args():
  def factory(learning_rate, mask=None):
    def init(params):
      return {"decayed": groups.mask_leaves(mask, params)}
    return optax.GradientTransformation(init, lambda u, s, p=None: (u, s))

  params = {"b": jnp.ones(4), "w": jnp.ones((3, 4))}
  by_ndim = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
  # Called with the count (ndim 0) it returns False: no decay anywhere, silently.
  with pytest.raises(TypeError, match="mask= was called as a schedule.*static_args"):
    optax.inject_hyperparams(factory)(learning_rate=0.1, mask=by_ndim).init(params)
  static = optax.inject_hyperparams(factory, static_args=("mask",))
  state = static(learning_rate=0.1, mask=by_ndim).init(params)
  assert state.inner_state["decayed"] == [False, True]
