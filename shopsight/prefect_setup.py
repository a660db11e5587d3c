"""Prefect that starts first time on a fresh or busy machine.

A flow run with no Prefect server configured starts a temporary API server in a subprocess. That server must
create and migrate its SQLite database (`$PREFECT_HOME/prefect.db`) and answer within
`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` (Prefect's default: 20 s). On a new 2-core machine the
migration alone takes 15-70 s, so every flow failed with "Timed out while attempting to connect to ephemeral
Prefect API server". Three measures, each cheap:

1. The database is migrated here, in the calling process, before any server starts: at `make install`
   (`python -m shopsight.prefect_setup`) and again, lazily, by every flow entry point. A marker file in the
   Prefect home records the Prefect version and database it was done for, so later runs skip it at no cost.
2. The temporary server's startup timeout defaults to 600 s: ample for an already migrated database on a
   loaded machine, and still finite.
3. Prefect's telemetry service is off: it inserts a session row while the server migrates, which printed
   `sqlite3.OperationalError: database is locked` tracebacks (and there is no internet to send it to).

The user's own settings win: an explicit environment variable, or a configured `PREFECT_API_URL` (then there is
no local database to prepare).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
}
MARKER = ".shopsight-database-ready"


def apply_prefect_defaults() -> None:
    """Set shopsight's Prefect defaults in the environment (before Prefect is imported); explicit values win."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def _configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _marker_content() -> dict[str, str]:
    import prefect
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    return {"prefect": prefect.__version__, "database": str(PREFECT_API_DATABASE_CONNECTION_URL.value() or "")}


def prepare_prefect_database(announce=print) -> str:
    """Migrate the local Prefect database to the installed version's head, once per Prefect home and version.

    Returns what happened: "server" (a Prefect API is configured: nothing local to prepare), "ready" (done
    before), or "migrated". Safe to call from several processes at once (a file lock serialises them).
    """
    apply_prefect_defaults()
    if _configured_api_url():
        return "server"
    from filelock import FileLock
    from prefect.settings import PREFECT_HOME

    home = Path(PREFECT_HOME.value()).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    marker = home / MARKER
    expected = _marker_content()
    with FileLock(str(home / ".shopsight-database.lock")):
        if marker.exists() and _read_json(marker) == expected and _database_present(expected["database"]):
            return "ready"
        announce(f"Preparing Prefect's local database in {home} (first run with this Prefect home; about a minute)")
        started = time.perf_counter()
        _migrate()
        marker.write_text(json.dumps(expected))
        announce(f"Prefect database ready in {time.perf_counter() - started:.0f} s")
        return "migrated"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _database_present(url: str) -> bool:
    """False when a SQLite database file named by `url` is gone (deleted since the marker was written)."""
    _, sep, path = url.partition(":///")
    return not (sep and url.startswith("sqlite")) or Path(path).exists()


def _migrate() -> None:
    import asyncio

    from prefect.server.database import provide_database_interface

    async def upgrade() -> None:
        await provide_database_interface().create_db()

    asyncio.run(upgrade())


def ensure_prefect_ready() -> None:
    """What every flow entry point calls first: defaults applied, the local database prepared."""
    prepare_prefect_database(announce=lambda line: print(line, file=sys.stderr, flush=True))


if __name__ == "__main__":  # `make install` runs this, so the first `make demo` finds the database ready
    apply_prefect_defaults()
    print(f"Prefect: {prepare_prefect_database()}")
