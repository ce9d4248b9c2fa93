"""Transactions from the Python client: consume-transform-produce exactly once,
a rollback, and a check answered by the producer.

    python3 transactions.py [HOST:PORT] [N]

Publishes N inputs to `py-tx-in`; for each, prepares its result on `py-tx-out`
with the input's ack and commits. Then prepares one transaction it rolls back
and one it leaves undecided, which the broker checks back and this client
commits. Prints the results consumed, one per line; exits 0 when they are
exactly the expected ones.
"""
import sys

from junction_client import COMMIT, JunctionClient, JunctionError

address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7400"
count = int(sys.argv[2]) if len(sys.argv) > 2 else 20
host, port = address.rsplit(":", 1)

client = JunctionClient(host, int(port), name="python-transactions")
client.publish("py-tx-in", [f"in-{n}".encode() for n in range(count)])
inputs = client.subscribe("py-tx-in", group="py-transform", start="earliest", credit=count)
for delivery in client.deliveries(inputs, count):
    n = delivery["body"].decode().split("-")[1]
    transaction, _ = client.prepare("py-tx-out", [f"out-{n}".encode()], producer_group="py",
                                    dedupe_ids=[f"out-{n}"], acks=(inputs, [delivery]))
    client.commit(transaction)

rolled_back, _ = client.prepare("py-tx-out", [b"never"], producer_group="py")
client.rollback(rolled_back)
try:
    client.commit(rolled_back)
    sys.exit("a commit after a rollback was accepted")
except JunctionError as error:
    assert error.code == 15, error

checked = []
client.answer_checks("py", lambda check: checked.append(check["transaction"]) or COMMIT)
undecided, _ = client.prepare("py-tx-out", [b"checked"], producer_group="py", timeout_ms=200)

results = client.subscribe("py-tx-out", group="py-readers", start="earliest", credit=count + 1)
seen = []
for delivery in client.deliveries(results, count + 1):  # the check's commit makes the last one visible
    seen.append(delivery["body"].decode())
    client.ack(results, [delivery])
for body in sorted(seen):
    print(body)
client.ping()
expected = sorted([f"out-{n}" for n in range(count)] + ["checked"])
print(f"checked {checked}, open {client.list_transactions()}", file=sys.stderr)
client.close()
sys.exit(0 if sorted(seen) == expected and checked == [undecided] else 1)
