"""Publishes N messages with receipts, then consumes them with explicit acks.

    python3 roundtrip.py [HOST:PORT] [N]

Prints one line per consumed message body and a summary on stderr; exits 0 when
every published message came back.
"""
import sys

from junction_client import JunctionClient, JunctionError

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
host, port = address.rsplit(":", 1)

client = JunctionClient(host, int(port), name="python-roundtrip")
bodies = [f"py-{n}".encode() for n in range(count)]
receipts = []
for start in range(0, count, 50):
    receipts += client.publish("python", bodies[start:start + 50], tag="example", properties={"lang": "python"})
assert len(receipts) == count and not any(r["duplicate"] for r in receipts)

subscription = client.subscribe("python", group="python-readers", tags="example", where="lang = 'python'", start="earliest")
seen = set()
for delivery in client.deliveries(subscription, count):
    print(delivery["body"].decode())
    client.ack(subscription, [delivery])
    seen.add(delivery["body"])
client.ping()  # the acks before it have been read
# A confirmed ack names what it acks: one the server never delivered is refused (17, not found).
try:
    client.ack(subscription, [{"queue": 0, "offset": 10**12}], confirm=True)
    print("an ack of an offset never delivered was accepted", file=sys.stderr)
    sys.exit(1)
except JunctionError as error:
    if error.code != 17:
        raise
client.close()
print(f"published {len(receipts)}, consumed {len(seen)}", file=sys.stderr)
sys.exit(0 if seen == set(bodies) else 1)
