"""A late-joining ZeroMQ subscriber that misses nothing: the ZeroMQ guide's
Clone pattern against a Junction PUB egress with sequence frames and a
catch-up endpoint.

    python3 late_joiner.py PUB_ENDPOINT CATCHUP_ENDPOINT COUNT

1. Subscribe to the PUB first (live messages are buffered), then ask the
   catch-up ROUTER for everything stored: ["SINCE", "earliest"].
2. Apply the answer, [envelope, body, "queue:offset"] per message, until
   ["END", positions] says where live delivery stands (["MORE", positions]:
   the answer was cut, ask again from there).
3. Follow the PUB: a message below the next offset of its queue was already
   applied (skip it); one above it means messages were missed (dropped at a
   high-water mark, say): ask the catch-up endpoint again from the positions
   reached, buffering live messages meanwhile.

Prints "queue:offset body" per message applied, in order per queue, and exits
after COUNT messages.
"""
import sys
import time

import zmq

pub_endpoint, catchup_endpoint, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = zmq.Context()
live = context.socket(zmq.SUB)
live.setsockopt(zmq.SUBSCRIBE, b"")
live.connect(pub_endpoint)
catchup = context.socket(zmq.DEALER)
catchup.setsockopt(zmq.LINGER, 0)
catchup.connect(catchup_endpoint)

next_offset = {}      # queue -> the next offset to apply
applied = 0
asking = False        # a catch-up request is outstanding
buffered = []         # live messages that came while asking
caught_up_once = False


def say(line):
    print(line, flush=True)


def parse_positions(frame):
    return {int(q): int(o) for q, o in (part.split(":") for part in frame.decode().split(",") if part)}


def ask():
    global asking
    positions = ",".join(f"{q}:{o}" for q, o in sorted(next_offset.items())) or "earliest"
    catchup.send_multipart([b"SINCE", positions.encode()])
    asking = True


def apply(queue, offset, body):
    global applied
    if offset < next_offset.get(queue, 0):
        return  # already applied: catch-up and live overlap
    next_offset[queue] = offset + 1
    applied += 1
    say(f"{queue}:{offset} {body.decode(errors='replace')}")


def follow(queue, offset, body):
    expected = next_offset.get(queue, 0)
    if offset > expected:
        say(f"gap in queue {queue}: expected {expected}, got {offset}; catching up")
        buffered.append((queue, offset, body))
        ask()
        return
    apply(queue, offset, body)


ask()
poller = zmq.Poller()
poller.register(live, zmq.POLLIN)
poller.register(catchup, zmq.POLLIN)
deadline = time.monotonic() + 120
while applied < count and time.monotonic() < deadline:
    events = dict(poller.poll(1000))
    if catchup in events:
        frames = catchup.recv_multipart()
        if frames[0] in (b"END", b"MORE"):
            # A filtered egress skips offsets: positions move past them.
            for queue, offset in parse_positions(frames[1]).items():
                next_offset[queue] = max(next_offset.get(queue, 0), offset)
            if frames[0] == b"MORE":
                ask()
                continue
            asking = False
            if not caught_up_once:
                caught_up_once = True
                say(f"caught up: {applied} stored messages, live from {frames[1].decode()}")
            waiting, buffered = sorted(buffered), []
            for message in waiting:
                if asking:
                    buffered.append(message)
                else:
                    follow(*message)
        elif frames[0] == b"ERROR":
            say("catch-up refused: " + frames[1].decode(errors="replace"))
            sys.exit(1)
        else:
            queue, offset = frames[2].decode().split(":")
            apply(int(queue), int(offset), frames[1])
    if live in events:
        envelope, body, sequence = live.recv_multipart()
        queue, offset = (int(part) for part in sequence.decode().split(":"))
        if asking:
            buffered.append((queue, offset, body))
        else:
            follow(queue, offset, body)
say(f"done: {applied} messages" if applied >= count else f"gave up after {applied} of {count}")
context.destroy()
sys.exit(0 if applied >= count else 1)
