"""One sharp process per session renders every case of the grid up front (Node and libvips
start once); each test then runs pixq's engine on its case and compares.

sharp comes from tests/differential/node_modules (`make sharp`); when it is missing the tests
fail naming that command, never skip. PIXQ_DIFF_FULL=1 runs the larger grid (`make
test-differential-full`); PIXQ_DIFF_REPORT=<file> writes every case's figures as a markdown table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pyvips

from tests.differential import grid
from tests.differential.sharp_client import SharpMissing, SharpRunner

CASES = grid.selected()


@pytest.fixture(scope="session")
def sharp_session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """sharp's versions and, per case id, its literal output and (for cases with an accepted
    difference) its rendering of pixq's documented rule: {"literal": path, "equivalent": path}."""
    out = tmp_path_factory.mktemp("sharp")
    try:
        runner = SharpRunner()
    except SharpMissing as exc:
        pytest.fail(str(exc))
    with runner:
        versions = runner.versions()
        ours = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
        theirs = versions["versions"]
        if theirs["vips"] != ours:
            # every tolerance assumes one libvips on both sides (e.g. sharp 0.34.5, the node 18
            # fallback of install_sharp.py, bundles 8.17.3): one clear error, not a page of diffs
            pytest.fail(f"sharp {theirs['sharp']} bundles libvips {theirs['vips']}, pyvips runs {ours}: the "
                        "differential test needs the same libvips on both sides (node >= 20.9 and `make sharp` "
                        "for the pinned sharp; bump tests/differential/package.json when pyvips' libvips moves)")
        requests = []
        for case in CASES:
            requests.append(case.runner_case(case.sharp, str(out / f"{case.id}.{case.format}")))
            if case.equivalent:
                requests.append({**case.runner_case(case.equivalent, str(out / f"{case.id}.equivalent.{case.format}")),
                                 "id": f"{case.id}#equivalent"})
        results = runner.render(requests)
    rendered: dict[str, dict[str, Any]] = {}
    for case in CASES:
        literal = results[case.id]
        equivalent = results.get(f"{case.id}#equivalent")
        rendered[case.id] = {
            "literal": Path(out / f"{case.id}.{case.format}") if literal["ok"] else literal["error"],
            "equivalent": (Path(out / f"{case.id}.equivalent.{case.format}") if equivalent["ok"]
                           else equivalent["error"]) if equivalent else None,
        }
    return {"versions": versions, "cases": rendered}


@pytest.fixture(scope="session")
def figures() -> list[dict[str, Any]]:
    """Rows of measured figures, one per case run; written out at the end when asked."""
    rows: list[dict[str, Any]] = []
    yield rows
    target = os.environ.get("PIXQ_DIFF_REPORT")
    if target and rows:
        lines = ["| case | input | job | format | size | bands pixq/sharp | MAD | max | vs | accepted | verdict |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in sorted(rows, key=lambda r: r["case"]):
            keys = ("case", "input", "job", "format", "size", "bands", "mad", "max", "vs", "accepted", "verdict")
            lines.append("| " + " | ".join(str(row[key]) for key in keys) + " |")
        Path(target).write_text("\n".join(lines) + "\n")
