"""Every source folder is a package of the distribution, so a non-editable install has all of accel."""
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_folder_is_listed_in_pyproject():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {pkg: ROOT / d for pkg, d in tool["package-dir"].items()}
    listed = set(tool["packages"])
    found = set()
    for pkg, d in dirs.items():
        for sub in [d, *(p for p in d.rglob("*") if p.is_dir())]:
            if any(sub.glob("*.py")) and "__pycache__" not in sub.parts:
                found.add(".".join([pkg, *sub.relative_to(d).parts]))
    assert found - listed == set(), f"source folders missing from [tool.setuptools] packages: {sorted(found - listed)}"
