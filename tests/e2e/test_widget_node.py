"""The share widget's JavaScript checks, run from the Python suite: its pure rules under `node --test`, and, once
`npm ci` has installed the pinned tools in frontend/, its types (tsc over the JSDoc) and the committed bundle being
the build of its sources (so a change to frontend/widget without `make assets` fails here, not in a merchant's
browser).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not on PATH")


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=FRONTEND, capture_output=True, text=True, timeout=120, check=False)


def test_the_widgets_pure_rules_pass_their_node_tests() -> None:
    assert NODE is not None
    result = run(NODE, "--test", "widget/test/")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout
    assert "# pass 0" not in result.stdout


@pytest.mark.skipif(not (FRONTEND / "node_modules" / "typescript").exists(), reason="run `npm ci` in frontend/")
def test_the_widgets_sources_type_check() -> None:
    assert NODE is not None
    result = run(NODE, str(FRONTEND / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "widget/tsconfig.json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.skipif(not (FRONTEND / "node_modules" / "esbuild").exists(), reason="run `npm ci` in frontend/")
def test_the_committed_widget_is_the_build_of_its_sources() -> None:
    assert NODE is not None
    result = run(NODE, "build.mjs", "--check-widget")
    assert result.returncode == 0, result.stdout + result.stderr
