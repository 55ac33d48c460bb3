"""The skip gate (tests/skipgate.py), exercised on throwaway pytest sessions in a subprocess: a skip
without an actionable reason fails the session, an actionable one is listed and passes."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skipgate import ACTIONABLE_MARK, skip_actionably

TESTS = Path(__file__).resolve().parents[1]      # where skipgate.py lives


def run_session(tmp_path: Path, test_source: str) -> subprocess.CompletedProcess:
    """pytest on one test file in an empty directory whose conftest loads the gate as the suite does."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")     # the session's own rootdir and (empty) settings
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["skipgate"]\n')
    (tmp_path / "test_case.py").write_text(textwrap.dedent(test_source))
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_case.py"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


UNEXPECTED_SKIPS = {
    "plain pytest.skip": """
        import pytest
        def test_passes():
            assert 1 + 1 == 2
        def test_skips():
            pytest.skip("dataset not found")
        """,
    "skipif mark": """
        import pytest
        def test_passes():
            assert 1 + 1 == 2
        @pytest.mark.skipif(True, reason="dataset not found")
        def test_skips():
            pass
        """,
    "importorskip at collection": """
        import pytest
        pytest.importorskip("a_module_that_does_not_exist_anywhere")
        def test_never_collected():
            pass
        """,
    "skip in a fixture": """
        import pytest
        @pytest.fixture
        def tool():
            pytest.skip("tool missing")
        def test_passes():
            assert 1 + 1 == 2
        def test_needs_tool(tool):
            pass
        """,
}


@pytest.mark.parametrize("source", UNEXPECTED_SKIPS.values(), ids=UNEXPECTED_SKIPS.keys())
def test_a_skip_without_an_action_fails_the_session(tmp_path, source):
    run = run_session(tmp_path, source)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "UNEXPECTED: " in run.stdout and "1 unexpected" in run.stdout, run.stdout
    assert "skip gate: FAILED" in run.stdout


def test_an_actionable_skip_passes_and_is_listed(tmp_path):
    run = run_session(tmp_path, """
        from skipgate import skip_unless_installable
        def test_passes():
            assert 1 + 1 == 2
        def test_needs_tool():
            skip_unless_installable("no-such-tool-sparkopt", "apt-get install no-such-tool-sparkopt")
        """)
    assert run.returncode == 0, run.stdout + run.stderr
    listed = [line for line in run.stdout.splitlines() if line.startswith("actionable: ")]
    assert listed == ["actionable: test_case.py::test_needs_tool: no-such-tool-sparkopt is not installed; "
                      f"to run it: apt-get install no-such-tool-sparkopt {ACTIONABLE_MARK}"], run.stdout
    assert "skip gate: 1 skipped, 0 unexpected" in run.stdout
    assert "1 passed, 1 skipped" in run.stdout


def test_one_unexpected_skip_among_actionable_ones_still_fails(tmp_path):
    run = run_session(tmp_path, """
        import pytest
        from skipgate import skip_actionably
        def test_actionable():
            skip_actionably("needs a GPU", "run on a machine with CUDA")
        def test_plain():
            pytest.skip("no reason given")
        """)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skip gate: 2 skipped, 1 unexpected" in run.stdout
    assert "UNEXPECTED: test_case.py::test_plain: no reason given" in run.stdout


def test_failures_keep_their_exit_status_and_xfail_is_not_a_skip(tmp_path):
    run = run_session(tmp_path, """
        import pytest
        @pytest.mark.xfail(reason="known bug", strict=True)
        def test_known_bug():
            assert False
        def test_fails():
            assert False
        """)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skip gate" not in run.stdout                 # nothing skipped: no section
    assert "1 failed, 1 xfailed" in run.stdout


def test_a_session_without_skips_passes(tmp_path):
    run = run_session(tmp_path, """
        def test_passes():
            assert 1 + 1 == 2
        """)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "skipped tests" not in run.stdout


def test_an_actionable_skip_needs_an_action():
    with pytest.raises(ValueError, match="needs both a reason and the action"):
        skip_actionably("tool missing", "  ")
