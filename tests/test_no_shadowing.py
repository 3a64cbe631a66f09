"""No folder of the checkout shadows an installed module when Python runs from the checkout's root.

``python -m pytest``, ``python -c`` and a script in the root put the root first on ``sys.path``; a regular
package there (a folder with ``__init__.py``) wins over an installed module of the same name. accel's source
folders beside ``accel/`` are therefore namespace folders, reachable only as ``accel.*``.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWN = "accel"  # the distribution of this checkout and its one top-level package


def _root_names() -> set[str]:
    """Names the checkout's root could answer an import of: its folders and ``.py`` files."""
    names = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name.isidentifier()}
    names |= {p.stem for p in ROOT.glob("*.py")}
    return names - {OWN}


def _resolve_from_root(names: list[str], extra_path: str | None = None) -> dict[str, list[str]]:
    """Where each module is found by a ``python -c`` started in the checkout's root: its origin and search paths."""
    code = ("import importlib.util, json, sys\n"
            "out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    s = importlib.util.find_spec(n)\n"
            "    out[n] = [] if s is None else [p for p in [s.origin, *(s.submodule_search_locations or [])] if p]\n"
            "print(json.dumps(out))\n")
    env = None
    if extra_path:
        import os
        env = {**os.environ, "PYTHONPATH": extra_path}
    done = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _from_root(name: str, paths: list[str]) -> list[str]:
    """The paths of a found module that are the root's own folder or file of that name (a virtual environment
    inside the checkout is elsewhere)."""
    own = {ROOT / name, ROOT / f"{name}.py"}
    out = []
    for p in paths:
        q = Path(p).resolve()
        if q in own or any(o in q.parents for o in own):
            out.append(p)
    return out


def test_installed_modules_named_like_a_root_folder_resolve_outside_the_checkout():
    """Every installed distribution's top-level module that shares a name with a root folder (``kernels``, which
    transformers requires, today) is the installed one."""
    dists = importlib.metadata.packages_distributions()
    clashes = sorted(n for n in _root_names() & set(dists) if set(dists[n]) != {OWN})
    found = _resolve_from_root(clashes) if clashes else {}
    bad = {n: _from_root(n, paths) for n, paths in found.items() if _from_root(n, paths)}
    assert not bad, f"root folders shadow installed modules: {bad}"


def test_no_root_folder_can_shadow_a_module_installed_later(tmp_path):
    """The same for any name: a package installed under each root folder's name is the one Python imports."""
    names = sorted(_root_names())
    for n in names:
        (tmp_path / n).mkdir()
        (tmp_path / n / "__init__.py").write_text("")
    found = _resolve_from_root(names, extra_path=str(tmp_path))
    bad = {n: _from_root(n, paths) for n, paths in found.items() if _from_root(n, paths)}
    assert not bad, f"root folders that would shadow an installed module (remove their __init__.py): {bad}"


def test_diffusers_and_accel_import_from_the_root():
    done = subprocess.run([sys.executable, "-c", "from diffusers import AutoencoderKL; import accel; "
                           "from accel.pipelines.reference import load_reference; from accel.kernels import select"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
