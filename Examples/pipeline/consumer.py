"""Reads the messages junction writes to stdout (JSON lines), prints each ERROR
as it comes, and a count per level and service at the end of input."""
import collections
import json
import sys

counts = collections.Counter()
for line in sys.stdin:
    message = json.loads(line)
    counts[(message["tag"], message["properties"]["service"])] += 1
    if message["tag"] == "ERROR" and counts[("ERROR", message["properties"]["service"])] <= 2:
        print(f"ERROR {message['body']}", flush=True)
print("--- consumed, by level and service ---")
for (level, service), n in sorted(counts.items()):
    print(f"{level:<6} {service:<8} {n}")
print(f"total {sum(counts.values())}")
