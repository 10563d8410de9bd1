"""One zoo vocabulary: `zoo:add` is the model and the task of skill `add`; the printed lm-eval name `zoo_add`
(bare or `zoo:zoo_add`) is the same task; every wrong spelling gets the canonical one as a hint; `zoo list`
and `zoo path` say where the zoo lives and what is in it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from study.cli import app
from study.config import EvaluationSpec
from study.errors import UserError
from study.evaluate import _flatten, build_task_dict, resolve_tasks
from study.zoo.catalog import read_zoo, zoo_summary
from study.zoo.names import model_name, task_name
from study.zoo.spec import EXPERTS


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("spelling, task", [
    ("zoo:add", "zoo_add"), ("zoo:zoo_add", "zoo_add"), ("zoo_add", "zoo_add"),
    ("zoo:sub", "zoo_sub_mc"), ("zoo_sub_mc", "zoo_sub_mc"), ("zoo:capital", "zoo_capital_mc"), ("zoo:all", "all"),
])
def test_every_spelling_of_a_task(spelling, task):
    assert task_name(spelling) == task


@pytest.mark.parametrize("spelling, hint", [
    ("zoo:capitals", "zoo:capital"),
    ("zoo:sub_mc", "zoo:sub"),
    ("zoo:zoo_capital", "zoo:capital"),
    ("zoo:add_steps", "zoo:add"),  # a model: the task of its skill
])
def test_unknown_task_gets_the_canonical_spelling(spelling, hint):
    with pytest.raises(UserError, match=f"unknown zoo task '{spelling}': did you mean '{hint}'"):
        task_name(spelling)


@pytest.mark.parametrize("spelling, hint", [
    ("zoo:zoo_add", "zoo:add"),  # a task's lm-eval name: the model of its skill
    ("zoo:zoo_sub_mc", "zoo:sub"),
    ("zoo:add_step", "zoo:add_steps"),
    ("zoo:bas", "zoo:base"),
])
def test_unknown_model_gets_the_canonical_spelling(spelling, hint):
    with pytest.raises(UserError, match=f"unknown zoo model '{spelling}': did you mean '{hint}'"):
        model_name(spelling, ["base", *EXPERTS])


def test_models_take_both_forms(fake_zoo):
    zoo = read_zoo(fake_zoo.path)
    assert zoo.model("zoo:add") == zoo.model("add") == fake_zoo.path / "models" / "add"


def test_sweep_tasks_accept_every_spelling(fake_zoo):
    specs = resolve_tasks(["zoo:add", "zoo_sub_mc", "zoo:zoo_first"], fake_zoo.root)
    assert [s["task"] for s in specs] == ["zoo_add", "zoo_sub_mc", "zoo_first"]
    assert all(Path(s["dataset_kwargs"]["data_files"]["test"]).is_file() for s in specs)


def test_a_task_named_twice_is_an_error(fake_zoo):
    with pytest.raises(UserError, match="'zoo:add' and 'zoo_add' both name task zoo_add"):
        resolve_tasks(["zoo:add", "zoo_add"], fake_zoo.root)
    with pytest.raises(UserError, match="'zoo:all' and 'zoo:sub' both name task zoo_sub_mc"):
        resolve_tasks(["zoo:all", "zoo:sub"], fake_zoo.root)


def test_task_spelling_is_checked_before_the_zoo_is_needed(tmp_path):
    with pytest.raises(UserError, match="evaluation.tasks: unknown zoo task 'zoo:capitals': did you mean 'zoo:capital'"):
        resolve_tasks(["zoo:capitals"], tmp_path / "no-zoo")


def test_a_bare_skill_name_points_to_the_zoo_task():
    with pytest.raises(UserError, match="unknown lm-eval task 'capital'; did you mean 'zoo:capital'"):
        resolve_tasks(["capital"])


def test_task_dict_without_deprecated_lm_eval_api(fake_zoo):
    specs = resolve_tasks(["zoo:add", "zoo:sub"], fake_zoo.root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        task_dict = build_task_dict(specs, EvaluationSpec(tasks=["zoo:add", "zoo:sub"], max_gen_toks=7))
    tasks = dict(_flatten(task_dict))
    assert sorted(tasks) == ["zoo_add", "zoo_sub_mc"]
    assert tasks["zoo_add"].config.generation_kwargs["max_gen_toks"] == 7


def test_zoo_path_prints_one_line(fake_zoo):
    for args, expected in [((), fake_zoo.path), (("add",), fake_zoo.path / "models" / "add"),
                           (("zoo:base",), fake_zoo.path / "models" / "base")]:
        result = invoke("zoo", "path", *args, "--zoo", str(fake_zoo.root))
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{expected}\n"


def test_zoo_path_errors(fake_zoo, tmp_path):
    result = invoke("zoo", "path", "zoo_add", "--zoo", str(fake_zoo.root))
    assert result.exit_code == 2 and "did you mean 'zoo:add'" in result.stderr
    result = invoke("zoo", "path", "--zoo", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "run `merge-study zoo build`" in result.stderr
    assert result.stdout == ""


def test_zoo_list(fake_zoo, tmp_path):
    result = invoke("zoo", "list", "--zoo", str(fake_zoo.root))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"mini zoo (llama) at {fake_zoo.path}" in out and "built " in out and "in 12 s" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  zoo:")}
    assert rows["zoo:add_steps"][:3] == ["add", "steps", "zoo:add"]
    assert rows["zoo:sub"][:3] == ["zoo_sub_mc", "multiple_choice", "150"]  # the task row of skill sub
    unbuilt = invoke("zoo", "list", "--zoo", str(tmp_path / "nothing"))
    assert unbuilt.exit_code == 0 and "not built yet" in unbuilt.stdout and "zoo:add_steps" in unbuilt.stdout
    assert invoke("zoo", "list", "--arch", "gpt2").exit_code == 2


def test_summary_says_when_the_zoo_is_cached(fake_zoo):
    zoo = read_zoo(fake_zoo.path)
    assert "cached (built earlier in 12 s)" in zoo_summary(zoo)
    assert ", built in 12 s" in zoo_summary(zoo, just_built=True) and "cached" not in zoo_summary(zoo, just_built=True)
    result = invoke("zoo", "build", "--zoo", str(fake_zoo.root))
    assert result.exit_code == 0 and "cached (built earlier in 12 s)" in result.stdout, result.output


def _commands(group, prefix=()):
    import typer.main

    click_group = typer.main.get_command(group)
    yield prefix
    for name, cmd in click_group.commands.items():
        if hasattr(cmd, "commands"):
            for sub in cmd.commands:
                yield (*prefix, name, sub)
            yield (*prefix, name)
        else:
            yield (*prefix, name)


def test_every_help_is_clean():
    """No typer type tags on flags or lists, no reStructuredText double backticks, defaults kept."""
    seen = 0
    for path in _commands(app):
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        for bad in ("<bool>", "<list[", "``"):
            assert bad not in result.stdout, (path, bad, result.stdout)
        seen += 1
    assert seen >= 12
    run_help = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).stdout
    assert "[default: results/<sweep name>]" in run_help
