"""A producer far ahead of the store, in a process of its own.

    python3 pipelined_producer.py PORT TOPIC WINDOW

One thread writes PUBLISH frames (one message each, receipt wanted) in writes
of 64 while fewer than WINDOW are unanswered; another reads what comes back.
Prints `receipts N` after each 1,000 receipts, and at the end one line
`result {json}`: what was sent, the queue offsets the receipts named (as
[first, last] ranges), whether ERROR shutting down came and whether anything
followed it, how the connection ended, and the bytes left unparsed.

A process of its own so that nothing else in the test runner's process can
touch its socket (a stray descriptor there once looked like lost receipts).
"""
import errno
import json
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "Examples", "python-client"))
from junction_client import ERROR, HELLO, PUBLISH, RECEIPTS, VERSION, Reader, Writer, encode_message  # noqa: E402

SHUTTING_DOWN = 21

port, topic, window = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.create_connection(("127.0.0.1", port))
sock.settimeout(60)

lock = threading.Condition()
state = {"sent": 0, "receipted": 0, "shutting_down": False, "after": 0, "ending": "running",
         "undecodable": None, "leftover": 0}
offsets = []


def frame(opcode, request_id, payload):
    return struct.pack(">IBI", 5 + len(payload), opcode, request_id) + payload


def writer():
    request_id = 2
    while request_id < 2_000_000:
        chunk = []
        for _ in range(64):
            w = Writer().u8(1).u16(1)
            encode_message(w, topic, b"p%d" % request_id)
            chunk.append(frame(PUBLISH, request_id, w.build()))
            request_id += 1
        try:
            sock.sendall(b"".join(chunk))
        except OSError:
            return
        with lock:
            state["sent"] += 64
            while state["ending"] == "running" and state["sent"] - state["receipted"] >= window:
                lock.wait()


def reader():
    buffer = b""
    reported = 0
    while True:
        while len(buffer) >= 4:
            (length,) = struct.unpack(">I", buffer[:4])
            if length < 5 or length > 1 << 24:
                state["undecodable"] = "frame length %d at bytes %s" % (length, buffer[:32].hex())
                break
            if len(buffer) < 4 + length:
                break
            opcode, _ = struct.unpack(">BI", buffer[4:9])
            body = buffer[9:4 + length]
            buffer = buffer[4 + length:]
            with lock:
                if state["shutting_down"]:
                    state["after"] += 1
                if opcode == RECEIPTS:
                    r = Reader(body)
                    for _ in range(r.u16()):
                        r.id()
                        r.u16()
                        offsets.append(r.u64())
                        r.i64()
                        if r.u8() & 2:
                            r.i64()
                        r.str()
                    state["receipted"] += 1
                    lock.notify_all()
                elif opcode == ERROR and Reader(body).u16() == SHUTTING_DOWN:
                    state["shutting_down"] = True
            if state["receipted"] >= reported + 1000:
                reported = state["receipted"] // 1000 * 1000
                print("receipts %d" % reported, flush=True)
        if state["undecodable"]:
            ending = "undecodable"
            break
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            ending = "timedOut"
            break
        except OSError as error:
            ending = "reset(%s)" % errno.errorcode.get(error.errno, error.errno)
            break
        if not chunk:
            ending = "endOfStream"
            break
        buffer += chunk
    with lock:
        state["ending"] = ending
        state["leftover"] = len(buffer)
        lock.notify_all()
    sock.shutdown(socket.SHUT_RDWR)


sock.sendall(frame(HELLO, 1, Writer().u16(VERSION).str("pipelined").u8(0).build()))
threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()

ranges = []
for offset in sorted(offsets):
    if ranges and ranges[-1][1] + 1 == offset:
        ranges[-1][1] = offset
    else:
        ranges.append([offset, offset])
print("result " + json.dumps(dict(state, offsets=ranges)), flush=True)
