"""An exec plugin in Python: Junction sends each delivery of its subscription as
a JSON line on stdin; this program publishes an enriched copy to the topic
`orders-enriched` and acks the original (stdout carries only protocol lines;
anything for people goes to stderr, which Junction logs).

    {"ack": "<message id>"}
    {"nack": "<message id>", "delayMs": 5000}
    {"publish": {"topic": "...", "tag": "...", "properties": {...}, "body": "..."}}
"""
import json
import sys

for line in sys.stdin:
    delivery = json.loads(line)
    order = delivery.get("body", "")
    enriched = {
        "topic": "orders-enriched",
        "tag": delivery.get("tag") or "enriched",
        "properties": dict(delivery.get("properties", {}), enrichedBy="enrich.py", attempt=str(delivery["attempt"])),
        "body": order.upper(),
        # A resent copy (after a crash before the ack) is recognised as a duplicate.
        "dedupeId": "enriched-" + delivery["id"],
    }
    print(json.dumps({"publish": enriched}), flush=True)
    print(json.dumps({"ack": delivery["id"]}), flush=True)
    print(f"enriched {delivery['id']}", file=sys.stderr, flush=True)
