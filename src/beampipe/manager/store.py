"""What the manager remembers: the deployed pipelines, in a SQLite database.

The state home is ``$BEAMPIPE_HOME``, by default ``~/.local/state/beampipe`` (the XDG state
directory). It holds::

    pipelines.db            this database (table ``pipelines``)
    token                   the manager's token, mode 0600 (:mod:`beampipe.manager.auth`)
    manager.json            {url, pid, host, started} of the running manager
    manager.lock            held (flock) by the running manager: one manager per home
    manager.log             its output, when ``deploy`` started it
    pipelines/<id>/         one directory per deployed pipeline (see
                            :mod:`beampipe.manager.supervisor`)

The database only holds facts that do not change while a pipeline runs (and its final state);
the live state comes from the pipeline's supervisor, so a manager that restarts finds every
pipeline again.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from beampipe.manager.auth import ensure_home

MANAGER_JSON = "manager.json"
MANAGER_LOCK = "manager.lock"
MANAGER_LOG = "manager.log"

ACTIVE = ("starting", "running", "draining")
"""States of a pipeline whose supervisor should be running."""
FINAL = ("done", "failed", "stopped", "lost")
"""States of a pipeline that has ended: ``done`` (its sources finished, exit code 0),
``failed`` (exit code 1), ``stopped`` (drained or stopped on request, exit code 130), ``lost``
(its supervisor disappeared without writing a result)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    backend TEXT NOT NULL,
    dir TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    finished REAL,
    supervisor_pid INTEGER,
    supervisor_host TEXT,
    supervisor_endpoint TEXT,
    exit_code INTEGER
)
"""


def state_home() -> Path:
    """``$BEAMPIPE_HOME``, else ``$XDG_STATE_HOME/beampipe``, else ``~/.local/state/beampipe``."""
    if os.environ.get("BEAMPIPE_HOME"):
        return Path(os.environ["BEAMPIPE_HOME"]).expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "beampipe"


@dataclass
class PipelineRecord:
    """One row of the ``pipelines`` table.

    Attributes:
        id: the pipeline id (8 hex digits) that the CLI commands take.
        name: the pipeline's ``name:``.
        backend: ``local``, ``slurm`` or ``nomad``.
        dir: its directory (``HOME/pipelines/<id>``).
        state: one of :data:`ACTIVE` or :data:`FINAL`.
        created, finished: Unix times (``finished`` None while it runs).
        supervisor_pid, supervisor_host, supervisor_endpoint: the supervisor process and its
            ZeroMQ command socket (None until it has started).
        exit_code: the run's exit code once finished (0 done, 1 failed, 130 stopped).
    """

    id: str
    name: str
    backend: str
    dir: str
    state: str
    created: float
    finished: float | None = None
    supervisor_pid: int | None = None
    supervisor_host: str | None = None
    supervisor_endpoint: str | None = None
    exit_code: int | None = None


class Store:
    """The ``pipelines`` table in ``HOME/pipelines.db``. Every method opens its own connection,
    so a store may be used from any thread (the API's handlers run in a thread pool)."""

    def __init__(self, home: Path) -> None:
        ensure_home(home)
        self.path = home / "pipelines.db"
        with closing(self._connect()) as db, db:
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        return db

    def add(self, record: PipelineRecord) -> None:
        """Insert ``record``.

        Raises:
            sqlite3.IntegrityError: its id is taken.
        """
        values = asdict(record)
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        with closing(self._connect()) as db, db:
            db.execute(f"INSERT INTO pipelines ({columns}) VALUES ({marks})", values)

    def get(self, pipeline_id: str) -> PipelineRecord | None:
        """The pipeline with this id, or None."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM pipelines WHERE id = ?", (pipeline_id,)).fetchone()
        return PipelineRecord(**dict(row)) if row is not None else None

    def all(self) -> list[PipelineRecord]:
        """Every pipeline, oldest first."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM pipelines ORDER BY created").fetchall()
        return [PipelineRecord(**dict(row)) for row in rows]

    def update(self, pipeline_id: str, **changes: Any) -> None:
        """Set the given columns of one pipeline.

        Raises:
            KeyError: a change names no column.
        """
        names = {f.name for f in fields(PipelineRecord)} - {"id"}
        unknown = set(changes) - names
        if unknown:
            raise KeyError(f"no column {', '.join(sorted(unknown))} in table pipelines")
        assignments = ", ".join(f"{name} = :{name}" for name in changes)
        with closing(self._connect()) as db, db:
            db.execute(
                f"UPDATE pipelines SET {assignments} WHERE id = :id", {**changes, "id": pipeline_id}
            )
