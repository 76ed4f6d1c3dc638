"""One dependency set: pyproject.toml, environment.yml and the Makefile agree, with no pins that break Colab."""

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COURSE_EXTRAS = ("course", "doom")  # what a learner installs (make lab, Colab, conda)


def course_requirements() -> set[str]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in COURSE_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return {r.replace(" ", "") for r in reqs}


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {r.replace(" ", "") for r in pip_section if not r.startswith("-e")}
    assert listed == course_requirements(), (
        f"only in environment.yml: {sorted(listed - course_requirements())}; "
        f"only in pyproject.toml: {sorted(course_requirements() - listed)}")
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.replace(" ", "") == "python" + PYPROJECT["project"]["requires-python"]


def test_makefile_installs_the_same_extras():
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS \?= (\S+)", makefile, re.M).group(1).split(",")
    assert set(COURSE_EXTRAS) <= set(extras) and "dev" in extras


def test_no_pins_that_break_colab():
    everything = " ".join(PYPROJECT["project"]["dependencies"]
                          + sum(PYPROJECT["project"]["optional-dependencies"].values(), []))
    for bad in ("numpy<2", "gymnasium<1", "box2d-py"):
        assert bad not in everything.replace(" ", "")
    assert PYPROJECT["project"]["requires-python"] == ">=3.10,<3.13"  # Colab runs 3.12
    assert "gymnasium[box2d]>=1.1" in everything  # maintained Box2D wheels, same-step autoreset


def test_stable_baselines3_is_benchmark_only():
    deps = PYPROJECT["project"]["dependencies"] + sum(
        (v for k, v in PYPROJECT["project"]["optional-dependencies"].items() if k != "bench"), [])
    assert not any("stable-baselines3" in d for d in deps)
