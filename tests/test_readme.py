"""The README stays true: its example runs, and CI runs its test command."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language):
  return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_first_shell_block_runs_the_main_job_second_the_tests():
  main_job, tests = _blocks("bash")[:2]
  assert "python -m experiments.quick" in main_job
  assert "python -m pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
  test_command = _blocks("bash")[1].strip()
  ci = (ROOT / ".ci" / "run").read_text()
  assert test_command in ci.splitlines()


def test_python_example_runs(capsys):
  example = _blocks("python")[0]
  exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
  loss = float(capsys.readouterr().out.split()[-1])
  assert 0.0 < loss < 10.0


def test_apply_if_finite_example_skips_the_inf_step(capsys):
  (guard,) = [b for b in _blocks("python") if "apply_if_finite" in b]
  exec(compile(guard, "README.md", "exec"), {"__name__": "readme"})
  assert capsys.readouterr().out.split() == ["1", "0.0"]
