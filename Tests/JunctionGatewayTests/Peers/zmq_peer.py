"""pyzmq peers for the ZeroMQ adapter tests. Each mode prints what it did on stdout, one line per event.

  push ENDPOINT N TAG            PUSH N messages [TAG, "m<i>"] and exit
  xpub ENDPOINT N TAG            bind XPUB, wait for a subscriber, publish N messages [TAG, "m<i>"]
  dealer ENDPOINT N [PREFIX]     DEALER producer with receipts and dedupe ids; resends what is not answered
  sub ENDPOINT N PREFIX          SUB, print each body, exit after N
  pull ENDPOINT N                PULL, print each body, exit after N
  acker ENDPOINT N               DEALER peer of an acked egress: print and ACK each delivery, exit after N
  bad ENDPOINT                   PUSH malformed messages, then one good one
  router-bad ENDPOINT            DEALER sending malformed messages to a ROUTER ingest; prints the answers
  catchup-bad ENDPOINT           DEALER sending malformed catch-up requests, then a good one; prints the answers
  stall ENDPOINT                 SUB with RCVHWM 1 that subscribes and never reads (until killed)
"""
import sys
import time
import zmq

mode, endpoint = sys.argv[1], sys.argv[2]
ctx = zmq.Context()


def out(line):
    print(line, flush=True)


# Producers that must deliver linger until their messages are sent (LINGER -1):
# a finite linger silently drops what a busy machine has not flushed in time.
# The tests bound how long they wait for the process.

if mode == "push":
    n, tag = int(sys.argv[3]), sys.argv[4]
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, -1)
    s.connect(endpoint)
    for i in range(n):
        s.send_multipart([tag.encode(), f"m{i}".encode()])
    out("sent")

elif mode == "keys":
    public, secret = zmq.curve_keypair()
    out(f"{public.decode()} {secret.decode()}")

elif mode == "curve-push":
    # curve-push ENDPOINT SERVER_PUBLIC_KEY|none BODY: one message, encrypted when a server key is given
    server_key, body = sys.argv[3], sys.argv[4]
    s = ctx.socket(zmq.PUSH)
    # The plain peer never completes the handshake: let it give up quickly.
    s.setsockopt(zmq.LINGER, 1000 if server_key == "none" else -1)
    if server_key != "none":
        public, secret = zmq.curve_keypair()
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = server_key.encode(), public, secret
    s.connect(endpoint)
    s.send_multipart([b"curve", body.encode()])
    out("sent")

elif mode == "push-json":
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, -1)
    s.connect(endpoint)
    s.send_multipart([b'{"topic": "jsontopic", "tag": "j", "keys": ["k1"], "properties": {"p": "1"}, "body": "hello", "dedupeId": "same"}'])
    s.send_multipart([b'{"topic": "jsontopic", "tag": "j", "body": "again", "dedupeId": "same"}'])
    s.send_multipart([b'{"topic": "jsontopic", "body_base64": "AAEC"}'])
    s.send_multipart([b'not json'])
    s.send_multipart([b'{"topic": "jsontopic", "color": "red"}'])
    out("sent")

elif mode == "xpub":
    n, tag = int(sys.argv[3]), sys.argv[4]
    s = ctx.socket(zmq.XPUB)
    s.setsockopt(zmq.LINGER, -1)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    out(f"port {port}")
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    if not poller.poll(30000):
        out("no subscriber")
        sys.exit(1)
    s.recv()  # the subscription message: the gateway's SUB is connected and subscribed
    for i in range(n):
        s.send_multipart([tag.encode(), f"m{i}".encode()])
    out("sent")

elif mode == "dealer":
    n = int(sys.argv[3])
    prefix = sys.argv[4] if len(sys.argv) > 4 else ""
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RECONNECT_IVL, 50)
    s.connect(endpoint)
    unanswered = {}
    next_i, answered = 0, 0
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    last_progress = time.monotonic()
    deadline = time.monotonic() + 120
    while answered < n and time.monotonic() < deadline:
        while next_i < n and len(unanswered) < 50:
            s.send_multipart([b"dealer", f"{prefix}d{next_i}".encode(), f"{prefix}id-{next_i}".encode()])
            unanswered[f"{prefix}id-{next_i}"] = next_i
            next_i += 1
        if poller.poll(200):
            frames = s.recv_multipart()
            # ["OK", message id, dedupe id]: the echoed dedupe id says which message is stored.
            if frames[0] == b"OK" and len(frames) == 3:
                key = frames[2].decode()
                if key in unanswered:
                    out(f"receipt {unanswered.pop(key)}")
                    answered += 1
                    last_progress = time.monotonic()
        elif time.monotonic() - last_progress > 1.0 and unanswered:
            # No answer for a while (the gateway died?): resend what is unanswered; dedupe ids make it idempotent.
            for key, i in sorted(unanswered.items(), key=lambda kv: kv[1]):
                s.send_multipart([b"dealer", f"{prefix}d{i}".encode(), key.encode()])
            out("resent")
            last_progress = time.monotonic()
    out("done" if answered >= n else f"gave up after {answered}")

elif mode in ("sub", "pull"):
    n = int(sys.argv[3])
    s = ctx.socket(zmq.SUB if mode == "sub" else zmq.PULL)
    if mode == "sub":
        s.setsockopt(zmq.SUBSCRIBE, sys.argv[4].encode())
    s.connect(endpoint)
    out("ready")
    for _ in range(n):
        frames = s.recv_multipart()
        out(f"{frames[0].decode()} {frames[1].decode()}")

elif mode == "acker":
    n = int(sys.argv[3])
    s = ctx.socket(zmq.DEALER)
    s.connect(endpoint)
    out("ready")
    for _ in range(n):
        envelope, body, tag = s.recv_multipart()
        out(f"{envelope.decode()} {body.decode()}")
        s.send_multipart([b"ACK", tag])
    s.setsockopt(zmq.LINGER, -1)

elif mode == "bad":
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, -1)
    s.connect(endpoint)
    s.send_multipart([b""])                          # empty
    s.send_multipart([b"a", b"b", b"c", b"d"])       # too many frames
    s.send_multipart([b"big", b"x" * 200_000])       # over maxMessageBytes
    s.send_multipart([b"ok", b"good"])
    out("sent")

elif mode == "router-bad":
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    for frames in ([b""], [b"a", b"b", b"c", b"d"], [b"t", b"fine"]):
        s.send_multipart(frames)
        answer = s.recv_multipart()
        out(" ".join(f.decode(errors="replace") for f in answer[:1]) + " " + str(len(answer)))

elif mode == "catchup-bad":
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    for frames in ([b"GIVE", b"earliest"], [b"SINCE", b"0:x"]):
        s.send_multipart(frames)
        answer = s.recv_multipart()
        out(" ".join(f.decode(errors="replace") for f in answer))
    s.send_multipart([b"SINCE", b"earliest"])
    while True:
        answer = s.recv_multipart()
        if answer[0] in (b"END", b"MORE", b"ERROR"):
            break
        body = answer[1].decode()
    out(f"{body} {answer[0].decode()}")

elif mode == "stall":
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 1)
    s.setsockopt(zmq.RCVBUF, 4096)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    out("ready")
    import signal
    signal.pause()  # never reads the socket; the test kills this process

# Close every socket (each with its own LINGER) and end the context: this is
# where a producer's queued messages are flushed. Left to interpreter exit,
# pyzmq may skip it and a loaded machine loses what the I/O thread had not sent.
ctx.destroy()
