#!/usr/bin/env python3
"""Generates a large, realistic Exim mainlog from the corpus's line shapes.

Every message of the corpus mainlogs (all its lines, in order) is a template.
The generator replays templates one after another with fresh message ids,
fresh local parts, and timestamps that move forward, until the wanted number
of lines is written. Lines without a message id (connections, rejections,
queue runs) are replayed with the message that followed them. Each replay
is a complete lifecycle, so the correlator sees arrivals, attempts and
completions in realistic proportions.

Usage: genlog.py OUT LINES [--seed N] [--corpus DIR]
"""

import argparse
import datetime as dt
import os
import random
import re
import string

HEADER = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(\.\d{3})?( \[\d+\])? (.*)$"
)
MSG_ID = re.compile(r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b")
LOCAL_PART = re.compile(r"(?<=[<\s=(])([a-z][a-z0-9.+-]{1,40})(?=@)")
B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def b62(n, width):
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(B62[r])
    return "".join(reversed(out))


def load_templates(corpus):
    """Groups each corpus mainlog into per-message templates: every line of a
    message, in order, with the id-less lines (connections, rejections)
    that came just before it."""
    templates = []
    for scen in sorted(os.listdir(corpus)):
        path = os.path.join(corpus, scen, "mainlog")
        if not os.path.isfile(path):
            continue
        groups, pending = {}, []
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                m = HEADER.match(line.rstrip("\n"))
                if not m:
                    continue
                ms = MSG_ID.match(m.group(4))
                if not ms:
                    pending.append(m)
                    continue
                group = groups.setdefault(ms.group(0), [])
                group.extend(pending)
                pending = []
                group.append(m)
        templates.extend(groups.values())
        if pending:
            templates.append(pending)
    return templates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("lines", type=int)
    ap.add_argument("--seed", type=int, default=1)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--corpus", default=os.path.join(here, "..", "tests", "data", "corpus"))
    a = ap.parse_args()

    rng = random.Random(a.seed)
    templates = load_templates(a.corpus)
    names = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(4, 9)))
             for _ in range(5000)]
    clock = dt.datetime(2026, 1, 5, 0, 0, 0)
    seq = 0
    written = 0
    with open(a.out, "w", encoding="utf-8", errors="surrogateescape") as out:
        while written < a.lines:
            group = templates[rng.randrange(len(templates))]
            ids = {}
            locals_ = {}
            pids = {}

            def new_id(m):
                nonlocal seq
                old = m.group(0)
                if old not in ids:
                    seq += 1
                    t = int(clock.timestamp())
                    ids[old] = f"{b62(t, 6)}-{b62(seq, 6)}-{b62(rng.randrange(3844), 2)}"
                return ids[old]

            def new_local(m):
                old = m.group(1)
                if old not in locals_:
                    locals_[old] = rng.choice(names) + str(rng.randrange(100))
                return locals_[old]

            for m in group:
                clock += dt.timedelta(milliseconds=rng.randrange(1, 60))
                body = MSG_ID.sub(new_id, m.group(4))
                body = LOCAL_PART.sub(new_local, body)
                stamp = clock.strftime("%Y-%m-%d %H:%M:%S")
                millis = f".{clock.microsecond // 1000:03d}" if m.group(2) else ""
                pid = ""
                if m.group(3):
                    pid = pids.setdefault(m.group(3), f" [{rng.randrange(1000, 60000)}]")
                out.write(f"{stamp}{millis}{pid} {body}\n")
                written += 1
                if written >= a.lines:
                    break


if __name__ == "__main__":
    main()
