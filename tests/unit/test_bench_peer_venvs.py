"""A peer's virtualenv is made once from its pinned requirements, and again when they change."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.peers import venvs


@pytest.fixture
def pins(tmp_path: Path) -> Path:
    folder = tmp_path / "pins"
    folder.mkdir()
    (folder / "peer.txt").write_text("# nothing to install\n")
    return folder


def test_the_virtualenv_is_made_once_and_reused(tmp_path: Path, pins: Path):
    cache = tmp_path / "cache"
    made = venvs.ensure("peer", cache=cache, requirements=pins)
    assert made == cache / "peer" / "bin" and (made / "python").exists()
    mark = cache / "peer" / "left-by-the-first-install"
    mark.touch()
    assert venvs.ensure("peer", cache=cache, requirements=pins) == made
    assert mark.exists()


def test_changed_requirements_make_the_virtualenv_anew(tmp_path: Path, pins: Path):
    cache = tmp_path / "cache"
    venvs.ensure("peer", cache=cache, requirements=pins)
    mark = cache / "peer" / "left-by-the-first-install"
    mark.touch()
    (pins / "peer.txt").write_text("# still nothing, but a different file\n")
    venvs.ensure("peer", cache=cache, requirements=pins)
    assert not mark.exists()
    assert (cache / "peer" / "bin" / "python").exists()


def test_a_failed_install_says_why_in_one_line_and_leaves_nothing_half_made(
    tmp_path: Path, pins: Path
):
    (pins / "peer.txt").write_text("not a === requirement\n")
    cache = tmp_path / "cache"
    with pytest.raises(venvs.InstallFailed) as failed:
        venvs.ensure("peer", cache=cache, requirements=pins)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"could not install peer into {cache / 'peer'}: ERROR: Invalid")
    assert not (cache / "peer").exists()
