"""Each peer's own virtualenv, made on first use from its pinned requirements file.

Nothing of a peer's goes into Courier's virtualenv: Celery and Procrastinate bring their
own versions of packages Courier pins too (SQLAlchemy, psycopg, click).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent
CACHE = REQUIREMENTS.parent / ".peers"


class InstallFailed(RuntimeError):
    """A peer's virtualenv could not be made."""


def ensure(name: str, *, cache: Path = CACHE, requirements: Path = REQUIREMENTS) -> Path:
    """The bin directory of `name`'s virtualenv, made anew when its requirements changed.

    The stamp (requirements and interpreter) is written only once the install succeeded,
    so an interrupted install is redone rather than trusted.
    """
    pinned = requirements / f"{name}.txt"
    pins = pinned.read_text()
    home = cache / name
    stamp = home / ".installed"
    wanted = f"{sys.version}\n{pins}"
    if stamp.is_file() and stamp.read_text() == wanted:
        return home / "bin"
    shutil.rmtree(home, ignore_errors=True)
    print(f"bench: installing {name} into {home} (once)", file=sys.stderr, flush=True)
    # Courier's pip installs into it: seeding each virtualenv with a pip of its own (ensurepip)
    # would take longer than the peers' own packages.
    _run(name, home, [sys.executable, "-m", "venv", "--without-pip", str(home)])
    pip = [sys.executable, "-m", "pip", "--python", str(home / "bin" / "python"), "install"]
    _run(name, home, [*pip, "--quiet", "-r", str(pinned)])
    stamp.write_text(wanted)
    return home / "bin"


def _run(name: str, home: Path, args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        last = (errors or done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InstallFailed(f"could not install {name} into {home}: {last}")
