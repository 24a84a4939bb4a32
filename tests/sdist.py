"""The test files of an installed framework, from its source distribution.

Django and Flask-Caching ship their test suites only in their sdists, not in
the wheels pip installs. :func:`sdist_files` fetches the sdist of the version
installed here, once, with pip (into ``build/sdists/``), and extracts only the
files asked for into ``build/sdist-tests/<name>-<version>/``. Nothing of the
frameworks is committed to greenpool.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUILD = Path(__file__).resolve().parent.parent / "build"


def sdist_files(project: str, members: list[str]) -> Path:
    """Return the directory holding *members* of *project*'s sdist (paths
    relative to the sdist's top directory, a folder meaning all it holds), for
    the version of *project* installed in this Python."""
    version = importlib.metadata.version(project)
    name = re.sub(r"[-_.]+", "_", project).lower()
    target = BUILD / "sdist-tests" / f"{name}-{version}"
    if all((target / member).exists() for member in members):
        return target
    archive = _download(project, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        with tarfile.open(archive) as tar:
            top = tar.getnames()[0].split("/")[0]
            wanted = [
                member
                for member in tar.getmembers()
                if any(
                    member.name == f"{top}/{path}" or member.name.startswith(f"{top}/{path}/")
                    for path in members
                )
            ]
            tar.extractall(scratch, members=wanted, filter="data")
        missing = [path for path in members if not Path(scratch, top, path).exists()]
        if missing:
            raise RuntimeError(f"{archive.name} holds no {missing}")
        shutil.rmtree(target, ignore_errors=True)
        Path(scratch, top).rename(target)
    return target


def _download(project: str, name: str, version: str) -> Path:
    """The sdist of *project* *version* in build/sdists/, downloaded by pip if missing."""
    sdists = BUILD / "sdists"
    archive = sdists / f"{name}-{version}.tar.gz"
    if not archive.exists():
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--no-binary", ":all:", "--dest", str(sdists), f"{project}=={version}"]
        subprocess.run(command, check=True, timeout=600)
    if not archive.exists():
        raise RuntimeError(f"pip download left no {archive}")
    return archive
