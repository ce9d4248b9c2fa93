"""Writes N log records as JSON lines on stdout: every 10th is an ERROR, every
5th otherwise a WARN, the rest INFO; the level is the message's tag.

    python3 producer.py N
"""
import json
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
services = ["billing", "search", "auth"]
for i in range(1, count + 1):
    level = "ERROR" if i % 10 == 0 else "WARN" if i % 5 == 0 else "INFO"
    service = services[i % 3]
    record = {"tag": level, "properties": {"service": service, "n": str(i)}, "body": f"{service}: event {i}"}
    print(json.dumps(record))
