"""The real `advocacy` CLI with small write batches and a pause after each, so a test can kill the store mid-way.

`python -m tests.faults.cli_shim <advocacy arguments>`. Only the batch sizes and the pace change: the commands,
the store and the error handling are the CLI's own. `ADVOCACY_FAULT_BATCH` sets the rows per import transaction
and per score write; `ADVOCACY_FAULT_PACE_S` the pause after each committed write.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

from api import cli, cli_analysis
from engine import analysis, ingest
from graph.neo4j_store import Neo4jStore


def _paced(method: Any, pause_s: float) -> Any:
    @functools.wraps(method)
    def paced(self: Neo4jStore, *args: Any, **kwargs: Any) -> Any:
        result = method(self, *args, **kwargs)
        time.sleep(pause_s)
        return result

    return paced


def main() -> None:
    batch = int(os.environ.get("ADVOCACY_FAULT_BATCH", "250"))
    pause_s = float(os.environ.get("ADVOCACY_FAULT_PACE_S", "0.05"))
    vars(cli)["import_files"] = functools.partial(ingest.import_files, chunk_rows=batch)
    vars(cli_analysis)["AnalysisParams"] = functools.partial(analysis.AnalysisParams, write_batch_size=batch)
    Neo4jStore.write_batch = _paced(Neo4jStore.write_batch, pause_s)  # type: ignore[method-assign]
    Neo4jStore.write_scores = _paced(Neo4jStore.write_scores, pause_s)  # type: ignore[method-assign]
    cli.app(prog_name="advocacy")


if __name__ == "__main__":
    main()
