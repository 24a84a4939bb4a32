"""The package as PyPI takes it: metadata it accepts, a README it renders, and
distributions that hold exactly what is meant to ship.

``python -m build`` makes the sdist, then the wheel from the unpacked sdist (so
the sdist is shown to build), without isolation: the ``dev`` group installs
what the build needs. ``twine check --strict`` then checks both as PyPI would,
except for classifiers, which it does not check and PyPI refuses when unknown:
those are checked against the ``trove-classifiers`` package.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import greenpool

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel of this checkout, built once for the module."""
    try:  # by its metadata: a checkout's build/ directory imports as "build" too
        importlib.metadata.version("build")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("python -m build is not installed (the dev dependency group has it)")
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _metadata(dist: Path) -> dict[str, list[str]]:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(name).decode())
    return {key: message.get_all(key) or [] for key in set(message.keys())}


def test_twine_check_strict_passes_on_the_sdist_and_the_wheel(dist: Path) -> None:
    """The README renders on PyPI and the metadata is complete, warnings as errors."""
    pytest.importorskip("twine")
    files = sorted(str(path) for path in dist.iterdir())
    assert len(files) == 2
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_classifier_is_one_pypi_knows(dist: Path) -> None:
    """PyPI refuses an upload with an unknown classifier ('Framework :: Gevent'
    was one); twine does not check them."""
    trove = pytest.importorskip("trove_classifiers")
    classifiers = _metadata(dist)["Classifier"]
    assert classifiers
    assert [c for c in classifiers if c not in trove.classifiers] == []
    assert [c for c in classifiers if c in trove.deprecated_classifiers] == []


def test_the_metadata_has_a_license_expression_urls_and_every_tested_python(dist: Path) -> None:
    """A PEP 639 license expression instead of the old License field; project
    URLs; a classifier for each Python the matrix tests (noxfile.py)."""
    metadata = _metadata(dist)
    assert metadata["License-Expression"] == ["MIT"]
    assert "License" not in metadata
    assert {url.split(",")[0] for url in metadata["Project-URL"]} >= {"Documentation", "Changelog"}
    nox_pythons = re.search(r"PYTHONS = \[(.*?)\]", (REPO / "noxfile.py").read_text())
    assert nox_pythons is not None
    pythons = re.findall(r'"(3\.\d+)"', nox_pythons.group(1))
    classified = [c.rsplit(" ", 1)[1] for c in metadata["Classifier"] if re.fullmatch(
        r"Programming Language :: Python :: 3\.\d+", c)]  # fmt: skip
    assert classified == pythons
    assert metadata["Requires-Python"] == [f">={pythons[0]}"]


def test_the_sdist_holds_the_package_and_no_tests(dist: Path) -> None:
    """The tests need examples/, benchmarks/ and tools/ of a checkout, so the
    sdist ships none of them rather than tests that cannot run."""
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    top = {name.split("/")[0] for name in names}
    assert top == {
        "greenpool", "greenpool.egg-info", "LICENSE", "MANIFEST.in", "PKG-INFO", "README.rst",
        "pyproject.toml", "setup.cfg",
    }  # fmt: skip
    package = {
        path.name for path in (REPO / "greenpool").iterdir() if path.suffix in (".py", ".typed")
    }
    assert {name.split("/", 1)[1] for name in names if name.startswith("greenpool/")} >= package


def test_the_wheel_holds_the_package_alone(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
        assert "greenpool/py.typed" in archive.namelist()
    assert top == {"greenpool", f"greenpool-{greenpool.__version__}.dist-info"}


def test_each_extra_admits_the_version_the_tests_run_and_has_an_upper_bound(dist: Path) -> None:
    """Users' extras are bounded above, and the versions installed here (the ones
    the tests ran) are inside the bounds."""
    packaging = pytest.importorskip("packaging.requirements")
    requirements = _metadata(dist)["Requires-Dist"]
    extras = [packaging.Requirement(r) for r in requirements if "extra ==" in r]
    assert {str(r.marker).split('"')[1] for r in extras} == {"prometheus", "django", "flask"}
    for requirement in extras:
        assert any(spec.operator == "<" for spec in requirement.specifier), requirement
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed), (requirement, installed)


def test_the_readme_is_short_and_links_nothing_relative() -> None:
    """README.rst is the entry page (PyPI's too): at most 300 lines, and no
    image or link that only works in a checkout."""
    text = (REPO / "README.rst").read_text()
    assert len(text.splitlines()) <= 300
    assert re.findall(r"^\.\. (?:image|figure)::", text, re.MULTILINE) == []
    targets = re.findall(r"`[^`<]*<([^>]+)>`_", text)
    assert targets and all(t.startswith("https://") for t in targets), targets
