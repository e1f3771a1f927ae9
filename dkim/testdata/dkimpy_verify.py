#!/usr/bin/python3
"""Verify the DKIM signatures of messages with dkimpy (Debian python3-dkim).

Usage: dkimpy_verify.py DNS.json MESSAGE...

DNS.json maps record names ("s1._domainkey.example.com") to TXT values;
it replaces DNS so that no network access happens. For each MESSAGE the
script checks every DKIM-Signature field (dkim.DKIM(...).verify(idx=i))
and prints one JSON document on stdout:

  [{"file": "...", "signatures": [{"d": "...", "s": "...",
    "pass": true, "error": ""}, ...]}, ...]

Exit status: 0 when the run completed (whatever the results), 2 when the
input could not be read or dkim could not be imported.
"""
import json
import logging
import sys

try:
    import dkim
    from dkim.util import parse_tag_value
except ImportError as e:  # reported to the Go test, which skips or fails
    print("cannot import dkim: %s" % e, file=sys.stderr)
    sys.exit(2)


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        records = json.load(f)
    records = {k.lower().rstrip("."): v for k, v in records.items()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        value = records.get(name.lower().rstrip("."))
        return None if value is None else value.encode("ascii")

    results = []
    for path in argv[2:]:
        with open(path, "rb") as f:
            msg = f.read()
        parsed = dkim.DKIM(msg)
        sigs = [v for (k, v) in parsed.headers if k.lower() == b"dkim-signature"]
        out = []
        for idx, value in enumerate(sigs):
            entry = {"d": "", "s": "", "pass": False, "error": ""}
            try:
                tags = parse_tag_value(value)
                entry["d"] = tags.get(b"d", b"").decode("ascii", "replace")
                entry["s"] = tags.get(b"s", b"").decode("ascii", "replace")
            except Exception as e:  # malformed signature field
                entry["error"] = "parse: %s" % e
            log = logging.getLogger("dkimpy-%d" % idx)
            log.propagate = False
            log.handlers = []
            collect = Collect()
            log.addHandler(collect)
            log.setLevel(logging.DEBUG)
            try:
                d = dkim.DKIM(msg, logger=log, minkey=1024)
                entry["pass"] = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
            except dkim.DKIMException as e:
                collect.messages.append("exception: %s" % e)
            if not entry["pass"] and not entry["error"]:
                entry["error"] = "; ".join(m for m in collect.messages if m)[-500:]
            out.append(entry)
        results.append({"file": path, "signatures": out})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
