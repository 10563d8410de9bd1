"""``merge-study methods`` documents every built-in: version, reference, how it differs from mergekit's
namesake (``mergekit_note``), and every parameter with its help, default and range."""

from __future__ import annotations

import json

from study.methods.registry import BUILTIN_NAMES, get_method
from study.methods.schema import MethodInfo, merge_method


def undocumented(infos: list[MethodInfo]) -> list[str]:
    """What a listing would leave unexplained: a method without a mergekit note, a parameter without help."""
    gaps = [f"{i.name}: no mergekit_note" for i in infos if not (i.mergekit_note or "").strip()]
    gaps += [f"{i.name}.{p.name}: no help" for i in infos for p in i.params if not p.help.strip()]
    gaps += [f"{i.name}: no reference" for i in infos if not i.reference.strip()]
    return gaps


def test_every_builtin_has_a_mergekit_note_and_help_for_every_parameter():
    assert undocumented([get_method(n) for n in BUILTIN_NAMES]) == []


def test_the_check_catches_a_missing_note_or_help():
    @merge_method("undocumented_example", reference="somewhere", ranges={"a": {"help": "the a"}})
    def example(base, tensors, *, a: float = 1.0, b: float = 2.0):
        return base

    @merge_method("documented_example", reference="somewhere", ranges={"a": {"help": "the a"}},
                  mergekit_note="not in mergekit")
    def documented(base, tensors, *, a: float = 1.0):
        return base

    assert undocumented([example.__merge_method__]) == [
        "undocumented_example: no mergekit_note", "undocumented_example.b: no help"]
    assert undocumented([documented.__merge_method__]) == []
    assert documented.__merge_method__.mergekit_note == "not in mergekit"


def _blocks(text: str) -> dict[str, str]:
    """The text listing split per method (a method's line starts at column 0, its details are indented)."""
    out: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if not line.startswith(" "):
            name = line.split()[0]
            out[name] = []
        out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def test_the_listing_shows_version_reference_note_and_parameters():
    from study.methods.describe import describe_methods, format_methods

    listed = {m["name"]: m for m in json.loads(json.dumps(describe_methods()))}  # what --json prints
    blocks = _blocks(format_methods())
    for name in BUILTIN_NAMES:
        info, m, block = get_method(name), listed[name], blocks[name]
        assert (m["version"], m["reference"], m["mergekit_note"]) == (info.version, info.reference, info.mergekit_note)
        assert block.splitlines()[0].startswith(f"{name}  (v{info.version}, k: {info.applicable_k})")
        assert f"    {info.reference}" in block and f"    vs mergekit: {info.mergekit_note}" in block
        assert [p["name"] for p in m["params"]] == [p.name for p in info.params]
        for p, shown in zip(info.params, m["params"]):
            assert shown["help"] == p.help and shown["default"] == p.default
            assert f"    {p.describe()}\n        {p.help}" in block
            if p.low is not None or p.high is not None:
                assert shown["range"] and f" in {shown['range']}" in p.describe()
    assert listed["ties"]["params"][1]["range"] == "(0.0, 1.0]"
    assert listed["karcher"]["params"][1]["range"] == "(0.0, inf]"
    assert "mergekit_note" in listed["mergekit:<name>"]
