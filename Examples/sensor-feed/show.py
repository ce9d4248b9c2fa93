"""Prints the readings `junction sub` writes (one JSON body per line) as a table."""
import json
import sys

for line in sys.stdin:
    reading = json.loads(line)
    print(f"{reading['kind']:<12} {reading['value']:>5}   (reading {reading['seq']})", flush=True)
