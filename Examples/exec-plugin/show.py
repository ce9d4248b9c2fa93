"""Prints the enriched orders `junction sub --format json` writes, one per line."""
import json
import sys

for line in sys.stdin:
    message = json.loads(line)
    properties = message["properties"]
    print(f"{message['body']:<10} tag={message['tag']} enrichedBy={properties['enrichedBy']} attempt={properties['attempt']}", flush=True)
