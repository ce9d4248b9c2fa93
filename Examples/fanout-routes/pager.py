"""An exec plugin standing in for a pager service that is down: it nacks every
alert (with a short delay), so after maxDeliveries attempts each alert moves to
the dead-letter topic %DLQ%pager."""
import json
import sys

for line in sys.stdin:
    alert = json.loads(line)
    print(f"pager: cannot page for {alert['body']!r} (attempt {alert['attempt']})", file=sys.stderr, flush=True)
    print(json.dumps({"nack": alert["id"], "delayMs": 20}), flush=True)
