"""A ZeroMQ PUSH feed: connects to the gateway's PULL socket and pushes N
events as [kind, JSON body] with `value` and `site` properties, then waits
until libzmq has handed them all over.

    python3 feed.py PORT N
"""
import json
import sys

import zmq

port, count = int(sys.argv[1]), int(sys.argv[2])
context = zmq.Context()
socket = context.socket(zmq.PUSH)
socket.setsockopt(zmq.LINGER, 10000)  # at exit, wait (up to 10 s) until every event is sent
socket.connect(f"tcp://127.0.0.1:{port}")
kinds = ["temperature", "humidity", "pressure"]
for i in range(count):
    kind = kinds[i % 3]
    value = {"temperature": 20 + i, "humidity": 50 + i % 7, "pressure": 1000 + i}[kind]
    event = {"properties": {"value": str(value), "site": ["north", "south"][i % 2]}, "body": f"{kind} {value} #{i}"}
    socket.send_multipart([kind.encode(), json.dumps(event).encode()])
socket.close()
context.term()
print(f"feed: pushed {count} events into topic events")
