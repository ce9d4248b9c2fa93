"""enrich.py's work, exactly once, with a transaction: for each delivery this
child prepares the enriched copy together with the ack of the original, then
commits. The copy becomes visible and the original counts as acked in one
step, or neither happens (a crash before the commit redelivers the original;
the copy's dedupeId keeps a second commit from storing it twice).

Lines to Junction (stdout):
    {"prepare": {"ref": r, "messages": [{...}], "acks": ["<delivery id>"]}}
    {"commit": "<transaction id>"}   {"rollback": "<transaction id>"}
Lines from Junction (stdin), besides deliveries:
    {"prepared": r, "transaction": "<id>"}   or {"prepared": r, "error": "..."}
    {"committed": "<id>"}   {"rolledBack": "<id>"}   {"failed": "<id>", "error": "..."}
    {"check": "<id>", "attempt": n, "messages": [...]}   (answer commit or rollback)
"""
import json
import sys

decided = {}       # transaction id -> what this process decided
waiting = []       # deliveries read while an answer was awaited
stdin = iter(sys.stdin)


def send(line):
    print(json.dumps(line), flush=True)


def read_until(wanted):
    """Reads lines until `wanted(line)` holds; keeps deliveries for later and answers checks."""
    while True:
        line = json.loads(next(stdin))
        if "check" in line:
            # Not decided by this process (it restarted after preparing): roll
            # back; the original was not acked, so it comes again.
            send({decided.get(line["check"], "rollback"): line["check"]})
        elif wanted(line):
            return line
        elif "id" in line and "topic" in line:
            waiting.append(line)


def deliveries():
    while True:
        if waiting:
            yield waiting.pop(0)
        else:
            try:
                yield read_until(lambda line: "id" in line and "topic" in line)
            except StopIteration:
                return


for delivery in deliveries():
    enriched = {
        "topic": "orders-enriched",
        "tag": delivery.get("tag") or "enriched",
        "properties": dict(delivery.get("properties", {}), enrichedBy="enrich-tx.py", attempt=str(delivery["attempt"])),
        "body": delivery.get("body", "").upper(),
        "dedupeId": "enriched-" + delivery["id"],
    }
    send({"prepare": {"ref": delivery["id"], "messages": [enriched], "acks": [delivery["id"]]}})
    prepared = read_until(lambda line: line.get("prepared") == delivery["id"])
    if "error" in prepared:
        print(f"cannot prepare {delivery['id']}: {prepared['error']}", file=sys.stderr, flush=True)
        send({"nack": delivery["id"]})
        continue
    transaction = prepared["transaction"]
    decided[transaction] = "commit"
    send({"commit": transaction})
    read_until(lambda line: transaction in (line.get("committed"), line.get("failed")))
    print(f"enriched {delivery['id']} in transaction {transaction}", file=sys.stderr, flush=True)
