"""Which sections a benchmark run takes: the peers (section 7) only where they cost no smoke run."""

from __future__ import annotations

import pytest

from bench import cli


def test_a_full_run_includes_the_peers():
    assert cli.parse([]).sections == [1, 2, 3, 4, 5, 6, 7]


def test_a_quick_run_leaves_the_peers_out_so_the_smoke_run_installs_nothing():
    assert cli.parse(["--quick"]).sections == [1, 2, 3, 4, 5, 6]


def test_a_quick_run_takes_the_peers_when_asked():
    assert cli.parse(["--quick", "--only", "3,7"]).sections == [3, 7]


def test_the_peers_without_courier_s_drain_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.parse(["--only", "7"])
    assert stop.value.code == 2
    [last] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert last.endswith(
        "section 7 compares the peers with section 3's Courier drain: add 3 (--only 3,7)"
    )


@pytest.mark.parametrize("only", ["8", "three"])
def test_an_unknown_section_is_refused_in_one_line(capsys, only):
    with pytest.raises(SystemExit):
        cli.parse(["--only", only])
    assert "--only takes section numbers from 1 to 7" in capsys.readouterr().err
