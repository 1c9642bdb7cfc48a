"""Installing beside other tools: torch is declared as a range (CAREamics and Cellpose pin
their own), the installed one satisfies it, and the shipped model and focus templates are
package data (issue 17, "install beside the tools people already have")."""

from __future__ import annotations

import tomllib
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {(r := Requirement(d)).name: r for d in deps}


def test_torch_is_a_range_that_the_installed_torch_satisfies() -> None:
    reqs = _requirements()
    for name in ("torch", "torchvision"):
        spec = reqs[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} pinned exactly: {spec}"
        assert any(s.operator == ">=" for s in spec)
        installed = metadata.version(name).split("+")[0]
        assert spec.contains(installed), f"{name} {installed} outside {spec}"
    # CAREamics 0.3.5 requires torch<2.14: a version both accept must exist
    assert reqs["torch"].specifier.contains("2.13.0")


def test_model_and_templates_are_package_data() -> None:
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert {"zoo/*.pt", "focus/*.npz"} <= set(patterns["refocus"])
    package = resources.files("refocus")
    assert any(p.name.endswith(".pt") for p in (package / "zoo").iterdir())
    assert any(p.name.endswith(".npz") for p in (package / "focus").iterdir())
