"""The ``merge-study`` Typer application and what every command module shares: the error contract
(``friendly``: a ``UserError`` is one line on stderr and exit status 2) and the common options.

Commands live in small modules (``study.cli`` for the sweep life cycle, ``study.cli_merge`` for one-off merges)
that register themselves on ``app``; ``study.cli.main`` is the entry point.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional

import typer

from study.errors import UserError

# Plain help (rich_markup_mode=None): typer's rich panels print a type tag on every option (`<bool>` on
# flags, `<list[str]>`) and read `[default: ...]` in help text as markup, dropping it.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"max_content_width": 120},
                  help="Reproducible model-merging studies: plan a sweep, merge, evaluate with lm-eval, report.")
zoo_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                      help="The mini zoo: a tiny base model and task experts built locally (`zoo list` shows them).")
app.add_typer(zoo_app, name="zoo")

_VERBOSE = {"on": False}

SweepArg = typer.Argument(..., metavar="SWEEP", help="sweep YAML file (see sweeps/ and README 'What a sweep file looks like')")
StoreOpt = typer.Option(None, "--store", metavar="DIR", help="result store directory [default: results/<sweep name>]")
ZooOpt = typer.Option(None, "--zoo", metavar="DIR",
                      help="mini zoo root [default: $MERGE_STUDY_ZOO or ~/.cache/merge-study/zoo]")
ArchOpt = typer.Option("llama", "--arch", metavar="ARCH", help="zoo architecture: llama | qwen3")
FamilyOpt = typer.Option("char", "--family", metavar="FAMILY",
                         help="zoo family: char (character tokenizer, models zoo:NAME) | bpe (byte-level BPE, zoo-bpe:NAME)")


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a ``UserError`` into one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if _VERBOSE["on"]:
                raise
            _err(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


@app.callback()
@friendly
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="full tracebacks for errors"),
          plugin: Optional[List[str]] = typer.Option(None, "--plugin", metavar="MODULE",
                                                     help="import merge methods from this module (repeatable)")) -> None:
    _VERBOSE["on"] = verbose
    if plugin:
        from study.methods.registry import register_module

        for module in plugin:
            register_module(module)


