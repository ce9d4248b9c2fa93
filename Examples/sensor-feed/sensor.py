"""A ZeroMQ PUB sensor feed: binds a PUB socket and publishes readings as
two-frame messages [kind, JSON body] until it is stopped. Kinds rotate through
temperature, humidity and pressure; each reading has a sequence number.

    python3 sensor.py PORT
"""
import json
import signal
import sys
import time

import zmq

# Stop on SIGTERM and SIGINT even when started with them blocked or ignored
# (a parent's signal mask is inherited).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
port = int(sys.argv[1])
context = zmq.Context()
socket = context.socket(zmq.PUB)
socket.bind(f"tcp://127.0.0.1:{port}")
kinds = ["temperature", "humidity", "pressure"]
sequence = 0
try:
    while True:
        kind = kinds[sequence % 3]
        value = {"temperature": 18 + sequence % 10, "humidity": 40 + sequence % 20, "pressure": 1000 + sequence % 15}[kind]
        body = json.dumps({"sensor": "s-1", "kind": kind, "value": value, "seq": sequence})
        socket.send_multipart([kind.encode(), body.encode()])
        sequence += 1
        time.sleep(0.005)  # about 200 readings a second
except KeyboardInterrupt:
    pass
finally:
    socket.close(linger=0)
    context.term()
