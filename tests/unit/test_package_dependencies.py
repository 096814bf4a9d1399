"""scripts/check-imports: the imports between the top-level packages follow the allowed order."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check-imports"


def load_checker() -> ModuleType:
    loader = SourceFileLoader("check_imports", str(SCRIPT))
    spec = importlib.util.spec_from_loader("check_imports", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_imports"] = module  # dataclasses look their module up while building
    try:
        loader.exec_module(module)
    finally:
        del sys.modules["check_imports"]
    return module


checker = load_checker()


def tree(root: Path, files: dict[str, str]) -> Path:
    """A tree of packages at `root`: every directory of a file gets an __init__.py."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent != Path("."):
                (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


def test_the_real_tree_has_no_problems() -> None:
    assert checker.find_problems(ROOT) == []


def test_the_real_tree_is_read() -> None:
    """The checker sees the real imports (an empty graph would pass everything)."""
    imports, unreadable = checker.find_imports(ROOT)
    assert unreadable == []
    edges = {(i.source, i.target) for i in imports}
    assert ("api", "store") in edges
    assert ("middleware", "store") in edges
    assert ("actors", "middleware") in edges


def test_a_tree_in_the_allowed_order_has_no_problems(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "store/jobs.py": "import dramatiq\nimport pika\nfrom sqlalchemy import select\n",
            "store/ledger.py": "from . import jobs\nfrom .jobs import x\nfrom store.jobs import y\n",
            "background/tasks.py": "import threading\n",
            "delivery/send.py": "import store.jobs\nfrom background import tasks\n",
            "middleware/ledger.py": "from store import ledger\nimport delivery.send\n",
            "actors/registry.py": (
                "import middleware.ledger\n\ndef load():\n    import actors.jobs\n"
            ),
            "actors/jobs.py": "from delivery import send\n",
            "api/app.py": "from store.jobs import x\nfrom background.tasks import y\n",
            "courier/cli.py": "import actors.registry\nimport api.app\nimport middleware\n",
        },
    )
    assert checker.find_problems(root) == []
    assert checker.present_packages(root) == [
        "background",
        "store",
        "delivery",
        "middleware",
        "actors",
        "api",
        "courier",
    ]


def test_a_two_package_cycle_is_reported(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "actors/broker.py": "from courier.settings import Settings\n",
            "courier/settings.py": "class Settings: ...\n",
            "courier/cli.py": "def run():\n    from actors import broker\n",
        },
    )
    problems = checker.find_problems(root)
    cycles = [p for p in problems if p.startswith("import cycle:")]
    assert cycles == [
        "import cycle: actors -> courier -> actors "
        "(actors -> courier at actors/broker.py:1, courier -> actors at courier/cli.py:2)"
    ]
    assert "actors/broker.py:1: actors imports courier.settings: " in problems[1]
    assert len(problems) == 2


def test_a_longer_cycle_is_reported(tmp_path: Path) -> None:
    """api → delivery → background → api: each step but the last is allowed."""
    root = tree(
        tmp_path,
        {
            "api/app.py": "import delivery.send\n",
            "delivery/send.py": "from background import tasks\n",
            "background/tasks.py": "def later():\n    if True:\n        import api.app\n",
        },
    )
    problems = checker.find_problems(root)
    assert [p for p in problems if p.startswith("import cycle:")] == [
        "import cycle: background -> api -> delivery -> background "
        "(background -> api at background/tasks.py:3, api -> delivery at api/app.py:1, "
        "delivery -> background at delivery/send.py:1)"
    ]
    assert (
        "background/tasks.py:3: background imports api.app: "
        "background must not import any project package"
    ) in problems


def test_store_importing_another_project_package_is_reported(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "store/jobs.py": "import dramatiq\n\ndef f():\n    from api.errors import E\n",
            "api/errors.py": "class E(Exception): ...\n",
        },
    )
    assert checker.find_problems(root) == [
        "store/jobs.py:4: store imports api.errors: store must not import any other project package"
    ]


def test_a_dynamic_import_counts(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "store/plugins.py": 'import importlib\n\nimportlib.import_module("middleware.x")\n',
            "middleware/x.py": "",
        },
    )
    assert checker.find_problems(root) == [
        "store/plugins.py:3: store imports middleware.x: "
        "store must not import any other project package"
    ]


def test_a_wrong_direction_is_reported(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "api/app.py": "from store import db\n",
            "api/resources/jobs.py": "from ..app import x\nfrom actors.registry import job_types\n",
            "actors/registry.py": "import store.db\n",
            "store/db.py": "",
        },
    )
    assert checker.find_problems(root) == [
        "api/resources/jobs.py:2: api imports actors.registry: "
        "api may import only background, delivery, store, tracing"
    ]


def test_the_graph_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tree(
        tmp_path,
        {
            "api/app.py": "import store.db\nfrom store import jobs\nimport actors\n",
            "actors/x.py": "",
            "store/db.py": "",
        },
    )
    assert checker.main(["--graph", "--root", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "store -> (nothing)",
        "actors -> (nothing)",
        "api -> store (2), actors (1) NOT ALLOWED",
    ]
    assert out[3:] == [
        "api/app.py:3: api imports actors: api may import only background, delivery, store, tracing"
    ]


def test_the_script_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "store/a.py": "import api\n",
            "api/b.py": "import store\n",
        },
    )
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "import cycle: store -> api -> store (store -> api at store/a.py:1, api -> store at api/b.py:1)",
        "store/a.py:1: store imports api: store must not import any other project package",
    ]
    assert result.stderr == "check-imports: 2 problem(s)\n"


def test_the_script_passes_a_good_tree(tmp_path: Path) -> None:
    root = tree(tmp_path, {"store/a.py": "", "api/b.py": "import store\n"})
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert subprocess.run(
        [sys.executable, str(SCRIPT), "--packages", "--root", str(root)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split() == ["store", "api"]
