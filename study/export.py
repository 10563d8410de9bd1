"""``merge-study export``: one scored merge cell as a Hugging Face model directory with a model card.

The weights are merged again through the code that scored the cell (``open_inputs`` and the streaming driver
with the cell's method, schema-resolved parameters, inputs and vocabulary rule), on the device the record
says the cell merged on, so the tensors are those that were scored, bit for bit. The sweep is planned again
here, every checkpoint identity read from its files, and the cell must be in that plan: its key then proves
that the inputs are the same content. The record adds what the key leaves out, the merge device. The output
follows ``study.merged_dir``'s rules: never into or over an input, an existing directory only with ``force``
and only when it is a previous export. It is built beside its target and renamed into place.

The model card (``README.md``) states the method, its parameters, every input with its revision and content
identity, the cell's scores with standard errors next to the base's, the harness and library versions the
cell ran with, and the mergekit configuration that computes the same merge. That configuration is only given
when ``study.mergekit_config`` maps it back onto this very method and these parameters for every tensor, or
when the cell ran through mergekit itself (``mergekit:<name>``); otherwise the card says why there is none.

``--push-to-hub`` checks the token with the hub before the merge (a refused token writes nothing), then
uploads the finished directory with ``huggingface_hub``'s ``create_repo`` and ``upload_folder``. The tests push
to a local hub (``tests/fixtures/hub_server.py``) that takes every file inline; the real hub's Xet transfer of
the weights is not exercised by them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.merged_dir import MARKER, Staging, check_output
from study.plan import BASE, ENSEMBLE, FUSION, SINGLE, Cell

CARD = "README.md"
EXPORT_KEY = "exported_cell"
"""The marker key that makes a directory a previous export (which ``--force`` may replace)."""


@dataclass(frozen=True)
class Exported:
    """What ``export_cell`` wrote, and the notes to print (e.g. a torch version that differs from the run's)."""

    path: Path
    device: str
    mergekit: str
    notes: tuple[str, ...] = ()


def find_cell(plan: Any, wanted: str) -> Cell:
    """The plan's cell with id ``wanted`` or a unique id prefix of at least 6 characters."""
    cells = plan.by_id()
    if wanted in cells:
        return cells[wanted]
    hits = [c for cid, c in cells.items() if len(wanted) >= 6 and cid.startswith(wanted)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UserError(f"cell {wanted!r} matches {len(hits)} cells: give more of its id")
    raise UserError(f"no cell {wanted!r} in this sweep's plan (cell ids are in the report's scores.parquet and in "
                    f"the store's records/; a cell whose checkpoints changed since it ran is no longer in the plan)")


def exportable(ctx: Any, store: Any, cell: Cell) -> Any:
    """The cell's done record; a ``UserError`` for a cell that has no single merged model to export."""
    from study.record import Outcome

    if cell.method in (BASE, SINGLE):
        what = "the base" if cell.method == BASE else f"checkpoint {cell.checkpoints[0]}"
        raise UserError(f"cell {cell.cell_id} is {what} itself, not a merge: nothing to export")
    if cell.method == ENSEMBLE:
        raise UserError(f"cell {cell.cell_id} is an output ensemble of {cell.k} models, not one model: nothing to "
                        f"export")
    if cell.kind == FUSION:
        raise UserError(f"cell {cell.cell_id} is a fusion cell: its model was trained, not merged, and export "
                        f"re-merges a merge cell bit for bit; a fusion cell's weights are not kept")
    record = store.get(cell.cell_id)
    if record is None or record.status != Outcome.DONE:
        state = "has no record" if record is None else f"is {record.status}"
        raise UserError(f"cell {cell.cell_id} ({cell.describe()}) {state}: only a scored merge is exported "
                        f"(`merge-study run` it first)")
    recorded = record.merge.get("identities", {})
    changed = [label for label, ident in recorded.items() if ctx.models[label].identity != ident]
    if changed:
        raise UserError(f"checkpoint {changed[0]} is not the content cell {cell.cell_id} merged: restore it")
    return record


def merge_device(record: Any, asked: str | None) -> tuple[str, list[str]]:
    """The device to merge on (the record's unless ``asked``), checked to exist here, and notes for the user."""
    import torch

    recorded = record.merge.get("device")
    device = asked or recorded or "cpu"
    notes = []
    if recorded is None:
        notes.append(f"the record does not say where cell {record.cell_id} merged (it predates that field); "
                     f"merging on {device}")
    elif device != recorded:
        notes.append(f"merging on {device}, the cell merged on {recorded}: tensors may differ in the last bits")
    ran_with = record.machine.get("torch")
    if ran_with and ran_with != torch.__version__:
        notes.append(f"the cell ran with torch {ran_with}, this is {torch.__version__}: tensors may differ in the "
                     f"last bits")
    dev = torch.device(device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"cell {record.cell_id} merged on {device}, which this machine lacks: pass --device cpu to "
                        f"export it anyway (tensors may then differ in the last bits from those scored)")
    return device, notes


def merge_inputs(ctx: Any, cell: Cell, device: str) -> tuple[Any, Any, dict[str, Any]]:
    """The inputs, method and parameters the runner merges the cell with (``CellRunner.weights``)."""
    from study.merge import open_inputs
    from study.methods.registry import get_method

    base = ctx.base_model(cell.base)
    ckpts = [ctx.models[label].path for label in cell.checkpoints]
    info = get_method(cell.method)
    params = info.resolve_params(cell.resolved_params, n_models=len(ckpts))
    inputs = open_inputs(base.path, ckpts, device=device, vocab_mismatch=ctx.sweep.merge.vocab_mismatch)
    return inputs, info, params


def mergekit_equivalent(ctx: Any, cell: Cell) -> tuple[dict[str, Any] | None, str]:
    """The mergekit configuration computing this cell's merge, or None and why there is none."""
    from study.methods.registry import get_method
    from study.mergekit_config import NATIVE
    from study.tensors import SafetensorsSource, storage_dtype

    base = ctx.base_model(cell.base)
    ckpts = [ctx.models[label].path for label in cell.checkpoints]
    info = get_method(cell.method)
    params = info.resolve_params(cell.resolved_params, n_models=len(ckpts))
    if any(ctx.models[label].is_lora for label in cell.checkpoints):
        return None, "a checkpoint is a LoRA adapter (merge-study materialises it over the base itself)"
    if cell.method.startswith("mergekit:"):
        from study.adapters.mergekit import mergekit_config

        inner = cell.method.split(":", 1)[1]
        return mergekit_config(inner, base.path if info.needs_base else None, base.path, ckpts, params,
                               info.params), ""
    if cell.method not in NATIVE:
        return None, (f"no mergekit method computes {cell.method} as merge-study does (mergekit's namesakes: "
                      f"{', '.join(NATIVE)}; docs/methods.md)")
    candidate = _candidate(cell.method, params, base.path, ckpts)
    if candidate is None:
        return None, f"{cell.method} with these parameters has no mergekit counterpart ({_params_text(params)})"
    candidate.update(dtype="float32", out_dtype=storage_dtype(SafetensorsSource(base.path)))
    problem = _maps_back(candidate, cell, params, ckpts)
    return (None, problem) if problem else (candidate, "")


def _candidate(method: str, p: dict[str, Any], base: Path, ckpts: list[Path]) -> dict[str, Any] | None:
    """mergekit's spelling of a native merge (the inverse of ``mergekit_config._native_params``)."""
    weighted = [{"model": str(c), "parameters": {"weight": w}} for c, w in zip(ckpts, p.get("weight", []))]
    if method == "linear":
        return {"merge_method": "linear", "models": weighted, "parameters": {"normalize": True}}
    if method == "slerp":
        return {"merge_method": "slerp", "base_model": str(ckpts[0]),
                "models": [{"model": str(c)} for c in ckpts], "parameters": {"t": p["t"]}}
    shared: dict[str, Any] = {"lambda": p["lambda"]}
    if method == "ties":
        if p["trim_scope"] != "tensor" or not p["normalize"]:
            return None
        shared.update(density=p["density"], normalize=True)
    if method == "breadcrumbs":
        shared.update(density=p["density"], gamma=p["gamma"])
    return {"merge_method": method, "base_model": str(base), "models": weighted, "parameters": shared}


def _maps_back(config: dict[str, Any], cell: Cell, params: dict[str, Any], ckpts: list[Path]) -> str:
    """"" when ``study.mergekit_config`` plans ``config`` as this native method, on these checkpoints, with
    ``params`` for every tensor; else what differs."""
    import yaml

    from study.mergekit_config import plan_config

    with tempfile.TemporaryDirectory(prefix="merge-study-export-") as tmp:
        path = Path(tmp) / "mergekit.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        try:
            plan = plan_config(path)
        except UserError as exc:
            return f"mergekit rejects the equivalent configuration ({str(exc).split(': ', 2)[-1]})"
    native = plan.native
    if native is None:
        return f"mergekit would run it itself ({plan.reason})"
    if native.method != cell.method or [p.resolve() for p in native.checkpoints] != [p.resolve() for p in ckpts]:
        return f"mergekit's plan is {native.method} over other models"
    differ = next((name for name, got in native.tensor_params.items() if got != params), None)
    return f"mergekit resolves other parameters for {differ}" if differ else ""


def mergekit_yaml(ctx: Any, config: dict[str, Any]) -> str:
    """The configuration as YAML, each hub model named by its id at the exact commit that ran."""
    import yaml

    names = {str(m.path): f"{m.ref.model}@{m.path.name}" for m in ctx.models.values()
             if m.identity.startswith("hub:")}

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (names.get(v, v) if k in ("model", "base_model") and isinstance(v, str) else rename(v))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    return yaml.safe_dump(rename(config), sort_keys=False)


def check_export_output(out: Path, inputs: list[Path], force: bool) -> Path:
    """``merged_dir.check_output``, with a model card allowed, and ``force`` replacing only a previous export."""
    target = Path(out).expanduser().resolve()
    marker = target / MARKER
    if target.is_dir() and marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = {}
        if not isinstance(previous, dict) or EXPORT_KEY not in previous:
            raise UserError(f"output {out} holds a `merge` output, not an export: choose a new directory (--force "
                            f"replaces only a previous export)")
        if not force:
            raise UserError(f"output {out} holds a previous export: pass --force to replace it, or choose a new "
                            f"directory")
    return check_output(out, inputs, force=force, also=(CARD,))


def export_cell(ctx: Any, store: Any, cell: Cell, out: Path, *, force: bool = False,
                device: str | None = None) -> Exported:
    """Merge the cell again into ``out`` (config, tokenizer, safetensors, ``merge_study.json``, ``README.md``)."""
    from study import __version__
    from study.merge import write_merged

    record = exportable(ctx, store, cell)
    device, notes = merge_device(record, device)
    inputs, info, params = merge_inputs(ctx, cell, device)
    sources = [Path(inputs.base.path), *(Path(c.path) for c in inputs.checkpoints)]
    check_export_output(out, sources, force)
    config, why_not = mergekit_equivalent(ctx, cell)
    card = model_card(ctx, store, record, cell, params, device, mergekit_yaml(ctx, config) if config else None,
                      why_not)
    base = next(b for b in ctx.sweep.bases if b.name == cell.base)
    metadata = {"method": cell.method, "params": params, "base": base.model.label, "models": list(cell.checkpoints),
                "base_dir": str(inputs.base.path), "model_dirs": [str(c.path) for c in inputs.checkpoints],
                EXPORT_KEY: cell.cell_id, "sweep": ctx.sweep.name, "device": device,
                "identities": {label: ctx.models[label].identity for label in (base.model.label, *cell.checkpoints)},
                "exported_by": f"merge-study {__version__}"}
    target = check_export_output(out, sources, force)
    with Staging(target) as staging:
        inner = write_merged(inputs, info, params, staging.path / "model", metadata=metadata)
        for path in sorted(Path(inner).iterdir()):
            path.rename(staging.path / path.name)
        Path(inner).rmdir()
        (staging.path / CARD).write_text(card)
        check_export_output(out, sources, force)  # again: the merge took a while
        staging.commit()
    return Exported(Path(out), device, "yes" if config else f"none: {why_not}", tuple(notes))


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "none"


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _base_record(ctx: Any, store: Any, cell: Cell) -> Any:
    base_cell = next((c for c in ctx.plan.cells if c.method == BASE and c.base == cell.base), None)
    return store.get(base_cell.cell_id) if base_cell is not None else None


def _card_metadata(ctx: Any, cell: Cell, record: Any, name: str) -> str:
    """The card's YAML header: hub ids of the merged models (hub convention for merges) and the scores."""
    from huggingface_hub import EvalResult, ModelCardData

    base = ctx.base_model(cell.base)
    hub = [m.ref.model for m in (base, *(ctx.models[label] for label in cell.checkpoints))
           if m.identity.startswith("hub:")]
    results = [EvalResult(task_type="text-generation", dataset_type=task, dataset_name=task,
                          metric_type=entry["metric"], metric_value=entry["score"], metric_name=entry["metric"])
               for task, entry in record.scores.items()]
    data = ModelCardData(library_name="transformers", tags=["merge", "merge-study", cell.method],
                         base_model=hub or None, base_model_relation="merge" if hub else None,
                         model_name=name, eval_results=results or None)
    return data.to_yaml()


def model_card(ctx: Any, store: Any, record: Any, cell: Cell, params: dict[str, Any], device: str,
               config_yaml: str | None, why_not: str) -> str:
    """The README.md of an exported cell (what, from what, how it scored, how to make it again)."""
    from study.methods.registry import get_method

    info = get_method(cell.method)
    spec = ctx.sweep.evaluation
    name = f"{ctx.sweep.name}-{cell.method.replace(':', '-')}-k{cell.k}-{cell.cell_id[:12]}"
    base_rec = _base_record(ctx, store, cell)
    base = ctx.base_model(cell.base)
    models = [["base", base.label, *_revision(base)]]
    models += [[f"checkpoint {i}", label, *_revision(ctx.models[label])] for i, label in enumerate(cell.checkpoints, 1)]
    scores = []
    for task, entry in record.scores.items():
        b = base_rec.scores.get(task, {}) if base_rec is not None else {}
        scores.append([task, entry["metric"], entry["score"], entry.get("stderr"), b.get("score"), b.get("stderr")])
    m = record.machine
    code = ("**on**: tasks were allowed to execute code the model wrote (`evaluation.allow_code_execution: true`)"
            if spec.allow_code_execution else "off")
    parts = [
        f"---\n{_card_metadata(ctx, cell, record, name).rstrip()}\n---",
        f"# {name}",
        f"A merge of {cell.k} checkpoints of `{base.label}` by **{cell.method}** ({info.reference or info.summary}), "
        f"made and scored by merge-study {record.harness_version}: cell `{cell.cell_id}` of "
        f"sweep `{ctx.sweep.name}` ({cell.describe()}). These weights were merged again from the cell's record "
        f"by the code that scored it, on {device}: they are the tensors that were scored.",
        "## Merge",
        _table(["", ""], [["method", f"{cell.method} (version {record.merge.get('method_version', info.version)})"],
                          ["parameters", _params_text(params)], ["as written in the sweep", _params_text(cell.params)],
                          ["merged on", f"{device}, torch {m.get('torch', '?')}"],
                          ["vocab_mismatch", ctx.sweep.merge.vocab_mismatch]]),
        "## Models merged",
        _table(["role", "model", "revision", "content identity"], models),
        "## Scores",
        f"lm-eval {m.get('lm_eval', '?')} (backend {spec.backend}, dtype {spec.dtype}, limit {spec.limit or 'all'} "
        f"documents per task, few-shot {spec.num_fewshot if spec.num_fewshot is not None else 'task default'}, "
        f"chat template {'on' if spec.apply_chat_template else 'off'}); standard errors are lm-eval's "
        f"(bootstrap_iters {spec.bootstrap_iters}; — where it gave none). Code execution: {code}. Ran on "
        f"{m.get('cpu', '?')} with transformers {m.get('transformers', '?')}, Python {m.get('python', '?')}.",
        _table(["task", "metric", "score", "stderr", "base score", "base stderr"], scores),
        "## mergekit configuration",
        (f"The same merge as a mergekit configuration (checked to plan to this method and these parameters for "
         f"every tensor):\n\n```yaml\n{config_yaml}```" if config_yaml else f"None: {why_not}."),
        "## Make it again",
        f"```bash\nmerge-study export {ctx.source or '<sweep.yaml>'} {cell.cell_id} --out DIR\n```\n\n"
        f"`merge_study.json` beside the weights records the inputs' paths and identities.",
    ]
    return "\n\n".join(parts) + "\n"


def _revision(model: Any) -> list[str]:
    """(revision, identity) of a resolved model: a hub model's commit, else "local" or "zoo"."""
    if model.identity.startswith("hub:"):
        asked = f" (asked: {model.ref.revision})" if model.ref.revision else ""
        return [f"{model.path.name}{asked}", model.identity]
    from study.zoo.names import split_model_ref

    return ["zoo" if split_model_ref(model.label) else "local directory", model.identity]


def push_target(repo: str) -> str:
    """The full id (``namespace/name``) that ``--push-to-hub repo`` will create or update, checked before anything
    is merged or written: a valid id, the hub reachable and online, and a token it accepts as one that may write
    (``whoami``). A bare ``name`` goes to the token's own namespace, as ``create_repo`` would put it."""
    from huggingface_hub.errors import HFValidationError, HfHubHTTPError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    from study.hub.client import endpoint, hub_api, offline, unreachable_errors

    flag = f"--push-to-hub {repo}"
    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise UserError(f"{flag}: not a hub repository id ({_first_line(exc)}): give NAME or NAMESPACE/NAME; nothing "
                        f"was written") from None
    if offline():
        raise UserError(f"{flag}: HF_HUB_OFFLINE is set: unset it to push; nothing was written")
    try:
        me = hub_api().whoami()
    except LocalTokenNotFoundError:
        raise UserError(f"{flag}: no hub token: log in with `hf auth login` or set HF_TOKEN to a write token; nothing "
                        f"was written") from None
    except unreachable_errors() as exc:
        raise UserError(f"{flag}: the hub at {endpoint()} cannot be reached ({type(exc).__name__}): check the network "
                        f"and HF_ENDPOINT; nothing was written") from None
    except HfHubHTTPError as exc:
        status = _status(exc)
        if status == 401:
            raise UserError(f"{flag}: the hub at {endpoint()} does not accept your token (HTTP 401): log in again "
                            f"with `hf auth login` or set HF_TOKEN to a valid write token; nothing was "
                            f"written") from None
        raise UserError(f"{flag}: the hub at {endpoint()} answered HTTP {status} ({_first_line(exc)}) when asked "
                        f"whose the token is: try again later; nothing was written") from None
    role = me.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UserError(f"{flag}: your token ({me.get('name')}) is read-only: log in with a write token (`hf auth "
                        f"login`, or HF_TOKEN); nothing was written")
    return repo if "/" in repo else f"{me['name']}/{repo}"


def push(folder: Path, repo: str, *, private: bool = False) -> str:
    """Upload an exported directory to the hub repository ``repo`` (``namespace/name``, as ``push_target`` gives
    it; created if missing, ``private`` then); the commit's URL. Errors are one line that says the export stays
    complete, since the merge before it took a while."""
    from huggingface_hub.errors import HfHubHTTPError

    from study.hub.client import endpoint, hub_api, unreachable_errors

    flag, kept = f"--push-to-hub {repo}", f"the export in {folder} is complete: push it again later"
    api = hub_api()
    try:
        if not api.repo_exists(repo):  # create_repo on an existing repo it may not write fails on a URL check
            # when the endpoint is not the one huggingface_hub read at import
            api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model",
                                 commit_message=f"merge-study export of {folder.name}")
    except HfHubHTTPError as exc:
        raise UserError(f"{flag}: the hub at {endpoint()} refused (HTTP {_status(exc)}: {_first_line(exc)}); "
                        f"{kept}") from None
    except unreachable_errors() as exc:
        raise UserError(f"{flag}: the hub at {endpoint()} cannot be reached ({type(exc).__name__}); {kept}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{flag}: {type(exc).__name__}: {_first_line(exc)}; {kept}") from None
    return str(info.commit_url)


def _status(exc: Any) -> Any:
    return getattr(getattr(exc, "response", None), "status_code", "?")


def _first_line(exc: BaseException) -> str:
    """The server's own message where the client kept one, else the first non-empty line of the error."""
    text = getattr(exc, "server_message", None) or str(exc)
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
