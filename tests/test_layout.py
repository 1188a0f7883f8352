"""The package layout a newcomer reads from folder names: layers in one order, no import runs upward.

Each top-level module or folder of ``tgrs_agents`` is a unit; a unit may import only units of its own
layer or below (function-level imports count too). The top level holds only the vocabulary, the one
chat renderer, the CLI and the public face.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "tgrs_agents"

# lowest first; a unit may import its own layer and the layers before it
LAYERS: list[set[str]] = [
    {"types", "errors", "assets"},  # vocabulary
    {"events", "chat"},
    {"testing"},  # the loopback stand-in server
    {"paid"},  # every remote call crosses this layer
    {"teachers"},
    {"tasks"},
    {"formats"},  # readers of the agent frameworks' trajectory files
    {"curation"},  # `tgrs curate`
    {"cluster"},  # `tgrs curate --engine ray`: curation's shards on Ray, one limit/budget/ledger
    {"export"},  # `tgrs export`: a run's kept data in the trainers' formats
    {"student"},
    {"generate"},
    {"report"},  # `tgrs report`
    {"loop"},  # `tgrs run`
    {"cli", "checks"},
    {"__init__", "__main__"},
]
TOP_LEVEL_MODULES = {"__init__", "__main__", "types", "errors", "events", "chat", "assets", "checks"}


def _unit(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def import_edges() -> list[tuple[str, str, str]]:
    """(importing file, its unit, imported unit) for every import of ``tgrs_agents`` inside it."""
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        module = ".".join(parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                if t == "tgrs_agents" or t.startswith("tgrs_agents."):
                    out.append((str(rel), _unit(module), _unit(t)))
    return out


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"unit {unit!r} is in no layer: add it to LAYERS")


def test_no_import_runs_upward() -> None:
    upward = [f"{f}: {u} -> {t}" for f, u, t in import_edges() if _layer(t) > _layer(u)]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_every_unit_is_placed_and_the_top_level_is_small() -> None:
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    for u in units:
        _layer(u)
    assert {p.stem for p in PKG.glob("*.py")} == TOP_LEVEL_MODULES


def test_the_graph_is_measured() -> None:
    # the check above would pass vacuously on an empty graph
    edges = import_edges()
    assert len(edges) > 100 and ("tgrs_agents/loop/rounds", "loop", "curation") in edges


def test_every_module_imports_by_its_dotted_path() -> None:
    """``import tgrs_agents.x.y as m`` works for every module: no public name shadows a folder."""
    import importlib

    import tgrs_agents

    folders = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert not folders & set(tgrs_agents.__all__), "a public name shadows a folder"
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        if rel.name == "__main__" or "vllm" in rel.name:
            continue
        dotted = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mod = importlib.import_module(dotted)
        obj = tgrs_agents
        for part in dotted.split(".")[1:]:
            obj = getattr(obj, part)  # what `import a.b.c as m` does
        assert obj is mod, dotted
