"""Runs queries on a current ClickHouse engine (chdb, in-process) over
tables it first creates and fills.

Usage: queries_on_chdb.py JOB.json SESSION_DIR

JOB.json holds "setup" (statements run first, in order: the schema),
"load" (a list of {"table", "rows"}, the rows as TabSeparated text) and
"queries" (a list of SELECT statements). Prints to standard output a JSON
list with, for each query in order, {"json": its FORMAT JSON output} or
{"error": the engine's message}. Exits 1 when the setup or a load fails.
"""

import json
import sys

from chdb import session


def main() -> int:
    job = json.load(open(sys.argv[1], encoding="utf-8"))
    s = session.Session(sys.argv[2])
    try:
        for sql in job["setup"]:
            s.query(sql)
        for load in job["load"]:
            if load["rows"]:
                s.query(f"INSERT INTO {load['table']} FORMAT TabSeparated\n{load['rows']}")
    except Exception as e:  # chdb raises its own error type
        print(f"setting up the tables failed: {e}", file=sys.stderr)
        return 1
    answers = []
    for sql in job["queries"]:
        try:
            answers.append({"json": s.query(sql, "JSON").bytes().decode("utf-8")})
        except Exception as e:
            answers.append({"error": str(e)})
    json.dump(answers, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
