"""Replays SQL statements on a current ClickHouse engine (chdb, in-process).

Usage: replay_on_chdb.py STATEMENTS.json SESSION_DIR

STATEMENTS.json is a JSON list of statements, run in order in one session
whose files live in SESSION_DIR. Every statement runs with the settings the
store sends on each request. Prints each failure with its statement and
exits 1 if there was any.
"""

import json
import sys

from chdb import session

SETTINGS = " SETTINGS optimize_move_to_prewhere = 0"


def main() -> int:
    statements = json.load(open(sys.argv[1], encoding="utf-8"))
    s = session.Session(sys.argv[2])
    s.query("SELECT version()")
    failures = 0
    for sql in statements:
        text = sql
        if sql.lstrip().upper().startswith("SELECT"):
            text = sql + SETTINGS
        try:
            s.query(text)
        except Exception as e:  # chdb raises its own error type
            failures += 1
            print(f"FAILED: {sql}\n  {e}\n", file=sys.stderr)
    print(f"{len(statements)} statements, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
