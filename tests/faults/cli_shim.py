"""The real `advocacy` CLI with small write batches and a pause after each, so a test can kill the store mid-way.

`python -m tests.faults.cli_shim <advocacy arguments>`. Only the batch sizes, the pace and the analysis heartbeat
change: the commands, the store and the error handling are the CLI's own. `ADVOCACY_FAULT_BATCH` sets the rows per
import transaction and per batch of staged scores; `ADVOCACY_FAULT_PACE_S` the pause after each committed write
(Neo4j and SQLite); `ADVOCACY_FAULT_HEARTBEAT_S` how often a running analysis re-saves its record.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from api import cli, cli_analysis
from engine import analysis, ingest
from graph.neo4j_store import Neo4jStore
from graph.sqlite_store import SqliteStore


def _paced(method: Any, pause_s: float) -> Any:
    @functools.wraps(method)
    def paced(self: Neo4jStore | SqliteStore, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        time.sleep(pause_s)
        return result

    return paced


def main() -> None:
    batch = int(os.environ.get("ADVOCACY_FAULT_BATCH", "250"))
    pause_s = float(os.environ.get("ADVOCACY_FAULT_PACE_S", "0.05"))
    vars(cli)["import_files"] = functools.partial(ingest.import_files, chunk_rows=batch)
    vars(cli_analysis)["AnalysisParams"] = functools.partial(analysis.AnalysisParams, write_batch_size=batch)
    heartbeat_s = float(os.environ.get("ADVOCACY_FAULT_HEARTBEAT_S", str(analysis.HEARTBEAT_S)))
    vars(cli_analysis)["run_analysis"] = functools.partial(analysis.run_analysis, heartbeat_s=heartbeat_s)
    Neo4jStore.write_batch = _paced(Neo4jStore.write_batch, pause_s)  # type: ignore[method-assign]
    Neo4jStore.stage_scores = _paced(Neo4jStore.stage_scores, pause_s)  # type: ignore[method-assign]
    SqliteStore.stage_scores = _paced(SqliteStore.stage_scores, pause_s)  # type: ignore[method-assign]
    cli.app(prog_name="advocacy")


if __name__ == "__main__":
    main()
