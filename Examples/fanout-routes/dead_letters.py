"""The dead-letter consumer: prints each dead letter with why it is there."""
import json
import sys

for line in sys.stdin:
    letter = json.loads(line)
    p = letter["properties"]
    print(f"dead letter: {letter['body']:<18} tag {letter['tag']}, from {p['DLQ_ORIGIN_TOPIC']}: {p['DLQ_REASON']}", flush=True)
