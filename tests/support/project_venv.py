"""A repository's own virtualenv with pytest in it, as a person makes one (`python -m venv .venv`, then
`pip install pytest`), built offline: a real venv whose interpreter is the base Python, and pytest's
distribution files (and its requirements') copied from the test run's environment.

Copied, not linked or wrapped: the sandbox verify runs in hides /tmp and other folders, so a venv that
pointed back into the test run's own environment (a checkout under /tmp) would not start there.
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

PYTEST_DISTRIBUTIONS = ("pytest", "iniconfig", "packaging", "pluggy", "pygments")


def project_venv(venv: Path) -> Path:
    """Make `venv` (a real virtualenv without pip) holding pytest; returns its bin/ folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    scheme = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})
    site = Path(scheme["purelib"])
    for name in PYTEST_DISTRIBUTIONS:
        distribution = metadata.distribution(name)
        for file in distribution.files or ():
            source = Path(str(distribution.locate_file(file)))
            if file.parts[0] == ".." or not source.is_file() or "__pycache__" in file.parts:
                continue   # console scripts (bin/) and bytecode: `python -m pytest` needs neither
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return venv / "bin"
