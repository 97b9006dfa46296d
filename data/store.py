"""The run store: one DuckDB file per run, the only channel between stages.

A stage reads its inputs with the named queries in `data.sql` and writes its outputs, plus its stage-log
row, inside `Store.stage(...)`: one transaction, so a crash leaves either all of a stage or none of it and
a re-run resumes at the first stage not logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from core import faults
from core.errors import StageError, StoreError
from data import sql

log = logging.getLogger(__name__)

STORE_FILE = "sparring.duckdb"


def store_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STORE_FILE


@dataclass
class StageResult:
    """What a stage reports back for its stage-log row: rows written and free-form details."""

    rows: int = 0
    details: dict[str, Any] = field(default_factory=dict)


class Store:
    """A DuckDB connection to one run's store, with schema checks and stage transactions."""

    def __init__(self, path: str | Path, read_only: bool = False, keep_if_unused: bool = True):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.is_file():
            raise StoreError(
                f"run store '{self.path}' does not exist; expected a run directory with {STORE_FILE}"
            )
        # `keep_if_unused=False` (the commands): a store this opening creates and closes without any committed
        # stage is removed, with the folders made for it, so a command that fails writes nothing.
        new = not (read_only or keep_if_unused or self.path.exists())
        self._created = [self.path, *_missing_dirs(self.path.parent)] if new else []
        try:
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path), read_only=read_only)
        except (duckdb.IOException, OSError) as e:
            raise _open_error(self.path, e) from None
        if not read_only:
            if self.con.execute(sql.HAS_META).fetchall()[0][0]:
                self._check_version()  # a newer store is refused before anything is created in it
            self._migrate()
        self._check_version()
        # stage -> the config values it depends on (`core.config.stage_config`), set by the command that runs
        # stages and recorded in each stage's log row, so a resume can tell whether the config drifted
        self.stage_configs: dict[str, dict[str, Any]] = {}
        self._round_rows: dict[
            int, list[Any]
        ] = {}  # begin_round's rows, written when a stage of the round commits

    # ---- lifecycle ------------------------------------------------------------------------------------
    @classmethod
    def for_run(cls, run_dir: str | Path, read_only: bool = False, keep_if_unused: bool = True) -> Store:
        return cls(store_path(run_dir), read_only=read_only, keep_if_unused=keep_if_unused)

    def close(self) -> None:
        try:
            empty = bool(self._created) and not self.scalar(sql.ANY_STAGE)
        except (duckdb.Error, StoreError):  # a broken connection: leave the file for the user to look at
            empty = False
        self.con.close()
        if empty:
            for path in self._created:  # the file, its write-ahead log, then the folders made for it
                if path == self.path:
                    path.unlink(missing_ok=True)
                    Path(f"{path}.wal").unlink(missing_ok=True)
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        try:
            self.con.execute(sql.SCHEMA).fetchall()
        except duckdb.Error as e:
            raise StoreError(f"cannot create tables in run store '{self.path}': {_first_line(e)}") from None
        if not self.con.execute(sql.GET_META, ["schema_version"]).fetchall():
            self.con.execute(sql.SET_META, ["schema_version", str(sql.SCHEMA_VERSION)]).fetchall()

    def _check_version(self) -> None:
        try:
            rows = self.con.execute(sql.GET_META, ["schema_version"]).fetchall()
        except duckdb.CatalogException:
            raise StoreError(f"'{self.path}' is not a Sparring run store (no meta table)") from None
        version = int(rows[0][0]) if rows else 0
        if version > sql.SCHEMA_VERSION:
            raise StoreError(
                f"run store '{self.path}' has schema version {version}, newer than this Sparring's "
                f"{sql.SCHEMA_VERSION}; upgrade Sparring to read it"
            )

    # ---- transactions and the stage log ---------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.execute("BEGIN TRANSACTION").fetchall()
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK").fetchall()
            raise
        try:
            self.con.execute("COMMIT").fetchall()
        except duckdb.Error as e:
            # A failed COMMIT (disk full, I/O error) leaves nothing of the transaction in the store.
            raise StoreError(
                f"could not commit to run store '{self.path}': {_first_line(e)}; nothing of this step was "
                "stored; expected a writable disk with free space, then re-run"
            ) from None

    @contextlib.contextmanager
    def stage(self, round_: int, stage: str, started: float | None = None) -> Iterator[StageResult]:
        """Write a stage's outputs and its log row atomically; the body fills in the `StageResult`.

        `started` is the stage's `time.perf_counter()` at its beginning, so the logged seconds include the
        compute done before the write.
        """
        if stage not in sql.STAGES:
            raise StageError(f"unknown stage '{stage}'; expected one of: {', '.join(sql.STAGES)}")
        result = StageResult()
        start = time.perf_counter() if started is None else started
        with self.transaction():
            yield result
            faults.point(f"{stage}:commit")
            seconds = time.perf_counter() - start
            if round_ in self._round_rows:
                self.con.execute(sql.INSERT_ROUND, self._round_rows.pop(round_))
            details = dict(result.details)
            if stage in self.stage_configs:
                details["config"] = self.stage_configs[stage]
            self.con.execute(
                sql.LOG_STAGE, [round_, stage, result.rows, seconds, json.dumps(details, sort_keys=True)]
            )

    def recorded_config(self, round_: int, stage: str) -> dict[str, Any] | None:
        """The config values a done stage ran with (None for stages logged before Sparring recorded them)."""
        text = self.scalar(sql.STAGE_DETAILS, [round_, stage])
        return json.loads(text).get("config") if text else None

    def stage_done(self, round_: int, stage: str) -> bool:
        return self.scalar(sql.STAGE_DONE, [round_, stage]) > 0

    def done_stages(self, round_: int) -> set[str]:
        return {r[0] for r in self.execute(sql.ROUND_STAGES, [round_])}

    def reset_from(self, round_: int, stage: str, drop_later: bool = False) -> list[str]:
        """Undo `stage` and every stage that depends on it (`sql.STAGE_INPUTS`) of `round_` in one transaction;
        returns the stages undone, in stage order.

        `drop_later` also removes every round after `round_` in the same transaction (they were played from
        what is undone); callers check `later_rounds` first and remove those rounds' model files after."""
        if stage not in sql.STAGES:
            raise StageError(f"unknown stage '{stage}'; expected one of: {', '.join(sql.STAGES)}")
        undone = dependents(stage)
        with self.transaction():
            if drop_later:
                for query in sql.DROP_LATER_ROUNDS:
                    self.execute(query, [round_])
            for s in undone:
                for table in sql.STAGE_TABLES[s]:
                    self.execute(sql.DELETE_ROUND_ROWS[table], [round_])
                self.execute(sql.UNLOG_STAGE, [round_, s])
        return undone

    def later_rounds(self, round_: int) -> list[int]:
        """Rounds after `round_` that were begun or have any stage in the store."""
        return [r[0] for r in self.execute(sql.LATER_ROUNDS, [round_])]

    # ---- reads and writes -----------------------------------------------------------------------------
    def insert(self, table: str, rows: pa.Table) -> int:
        """Append an Arrow table to `table`, matching columns by name (one vectorised INSERT)."""
        return self.insert_with(sql.INSERT_BY_NAME[table], rows)

    def insert_with(self, statement: str, rows: pa.Table) -> int:
        """Run an INSERT that reads the Arrow table `rows` as `_arrow_batch` (tables of other rooms use it)."""
        if rows.num_rows == 0:
            return 0
        self.con.register("_arrow_batch", rows)
        try:
            self.execute(statement)
        finally:
            self.con.unregister("_arrow_batch")
        return rows.num_rows

    def execute(self, query: str, params: Any = None) -> list[tuple]:
        """Run one statement and drain its result (DuckDB 2 refuses new work while a result is open)."""
        try:
            return self.con.execute(query, params).fetchall()
        except duckdb.IOException as e:
            raise StoreError(f"cannot write run store '{self.path}': {_first_line(e)}") from None

    def arrow(self, query: str, params: Any = None) -> pa.Table:
        try:
            return self.con.sql(query, params=params).to_arrow_table()
        except duckdb.IOException as e:
            raise StoreError(f"cannot read run store '{self.path}': {_first_line(e)}") from None

    def rows(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        return self.arrow(query, params).to_pylist()

    def scalar(self, query: str, params: Any = None) -> Any:
        rows = self.execute(query, params)
        return rows[0][0] if rows else None

    def count(self, table: str, round_: int) -> int:
        return int(self.scalar(sql.COUNT_ROUND[table], [round_]))

    # ---- rounds and models ----------------------------------------------------------------------------
    def begin_round(self, round_: int, attacker: str, defender: str, scorer: str, config_json: str) -> None:
        """Which models and config round `round_` uses now, written in the transaction of its next stage to
        commit: a command that fails writes nothing. Stages already done keep what they ran with in their own
        log rows (a resume that would change those is refused before this is called)."""
        self._round_rows[round_] = [round_, attacker, defender, scorer, config_json]

    def round_info(self, round_: int) -> dict[str, Any] | None:
        rows = self.execute(sql.GET_ROUND, [round_])
        if not rows:
            return None
        return dict(zip(("attacker_model", "defender_model", "scorer", "config_json"), rows[0], strict=True))

    def model_for(self, role: str, round_: int) -> str | None:
        """The newest model of `role` trained on a round before `round_` (what round `round_` plays with)."""
        return self.scalar(sql.LATEST_MODEL, [role, round_])


def _missing_dirs(folder: Path) -> list[Path]:
    """`folder` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def dependents(stage: str) -> list[str]:
    """`stage` and every stage that reads its output, directly or through another, in stage order."""
    found = {stage}
    for s in sql.STAGES:  # stage order is a topological order of STAGE_INPUTS
        if found & set(sql.STAGE_INPUTS[s]):
            found.add(s)
    return [s for s in sql.STAGES if s in found]


_PID = re.compile(r"PID (\d+)")


def _open_error(path: Path, e: Exception) -> StoreError:
    text = str(e)
    if "lock" in text.lower():
        pid = _PID.search(text)
        holder = f"process {pid.group(1)}" if pid else "another process"
        return StoreError(
            f"run store '{path}' is open for writing by {holder}; wait for it to finish or stop it, then re-run"
        )
    if "serializ" in text.lower() or "version" in text.lower():
        return StoreError(f"'{path}' is not a DuckDB file this DuckDB can read: {_first_line(e)}")
    return StoreError(f"cannot open run store '{path}': {_first_line(e)}")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
