"""The public surface: ``__all__`` is complete and importable, and importing is light."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import tgrs_agents

HEAVY = ("torch", "transformers", "openai", "anthropic", "httpx")


def test_all_is_sorted_and_unique() -> None:
    names = list(tgrs_agents.__all__)
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_all_names_are_importable() -> None:
    for name in tgrs_agents.__all__:
        obj = getattr(tgrs_agents, name)
        assert obj is not None, name
        module = getattr(obj, "__module__", "") or ""
        assert module.startswith("tgrs_agents"), (name, module)
    ns: dict[str, object] = {}
    exec("from tgrs_agents import *", ns)  # star-import gives exactly __all__
    assert {k for k in ns if not k.startswith("__")} == set(tgrs_agents.__all__)


def test_core_names_are_public() -> None:
    expected = {
        "Candidate", "ConfigError", "Decision", "Panel", "PanelConfig", "Policy", "Teacher",
        "TeacherConfig", "TeacherError", "TgrsError", "Verdict", "load_panel", "make_policy",
        "register_teacher", "select_best_k",
    }
    assert expected <= set(tgrs_agents.__all__)


def test_public_classes_and_functions_of_the_package_root_are_listed() -> None:
    # anything public re-exported at the package root must be in __all__
    for name, obj in vars(tgrs_agents).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert name in tgrs_agents.__all__, name


def test_errors_share_one_root() -> None:
    for name in ("ConfigError", "InputError", "RunStoreError", "TeacherError", "BudgetExhausted"):
        assert issubclass(getattr(tgrs_agents, name), tgrs_agents.TgrsError), name


def test_version() -> None:
    assert isinstance(tgrs_agents.__version__, str) and tgrs_agents.__version__


def test_import_pulls_in_no_heavy_dependency() -> None:
    code = (
        "import json, sys\n"
        "import tgrs_agents\n"
        "import tgrs_agents.teachers.final_answer, tgrs_agents.teachers.regex\n"
        "import tgrs_agents.teachers.json_schema, tgrs_agents.teachers.python_fn\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
