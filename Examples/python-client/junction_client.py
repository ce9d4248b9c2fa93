"""A client of Junction's native protocol, in the Python standard library only.

Written from docs/PROTOCOL.md: it shows that the document is enough to write a
client. It publishes with receipts, consumes with explicit acks, and uses
transactions (prepare, commit, rollback, answering checks; a commit may carry
acks of consumed deliveries).

    client = JunctionClient("127.0.0.1", 7400, name="py")
    receipts = client.publish("orders", [b"one", b"two"], tag="created")
    sub = client.subscribe("orders", group="billing", start="earliest")
    for delivery in client.deliveries(sub, count=2):
        print(delivery["body"])
        client.ack(sub, [delivery])
"""
import socket
import struct

VERSION = 1
HELLO, PING, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PULL, ACK, NACK = 0x01, 0x02, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24
LIST_TOPICS, LIST_GROUPS = 0x30, 0x31
TX_PREPARE, TX_END, TX_CHECKER, TX_LIST = 0x40, 0x41, 0x42, 0x43
HELLO_OK, PONG, RECEIPTS, SUBSCRIBED, DELIVERIES, TOPICS, OK, ERROR = 0x81, 0x82, 0x90, 0xA0, 0xA1, 0xB0, 0xBE, 0xFF
TX_PREPARED, TX_CHECK, TRANSACTIONS = 0x91, 0xA2, 0xB2
COMMIT, ROLLBACK, UNKNOWN = 0, 1, 2


class JunctionError(Exception):
    def __init__(self, code, message):
        super().__init__(f"error {code}: {message}")
        self.code = code


class Writer:
    def __init__(self):
        self.parts = []

    def u8(self, v): self.parts.append(struct.pack(">B", v)); return self
    def u16(self, v): self.parts.append(struct.pack(">H", v)); return self
    def u32(self, v): self.parts.append(struct.pack(">I", v)); return self
    def u64(self, v): self.parts.append(struct.pack(">Q", v)); return self
    def i32(self, v): self.parts.append(struct.pack(">i", v)); return self
    def i64(self, v): self.parts.append(struct.pack(">q", v)); return self

    def str(self, text):
        data = text.encode("utf-8")
        return self.u16(len(data)).raw(data)

    def bytes(self, data): return self.u32(len(data)).raw(data)
    def raw(self, data): self.parts.append(data); return self

    def opt_str(self, text):
        return self.u8(0) if text is None else self.u8(1).str(text)

    def build(self): return b"".join(self.parts)


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise JunctionError(1, "frame ends early")
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def u8(self): return self.take(1)[0]
    def u16(self): return struct.unpack(">H", self.take(2))[0]
    def u32(self): return struct.unpack(">I", self.take(4))[0]
    def u64(self): return struct.unpack(">Q", self.take(8))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]
    def str(self): return self.take(self.u16()).decode("utf-8")
    def bytes(self): return self.take(self.u32())
    def opt_str(self): return self.str() if self.u8() == 1 else None

    def id(self):
        position, checksum = self.u64(), self.u32()
        return f"{position:016x}{checksum:08x}"

    def message(self):
        topic, flags = self.str(), self.u8()
        tag = self.str() if flags & 1 else None
        keys = [self.str() for _ in range(self.u16())]
        properties = {}
        for _ in range(self.u16()):
            name = self.str()
            properties[name] = self.str()
        sharding_key = self.str() if flags & 2 else None
        dedupe_id = self.str() if flags & 4 else None
        deliver_at = self.i64() if flags & 8 else None
        born = self.i64()
        body = self.bytes()
        return {"topic": topic, "tag": tag, "keys": keys, "properties": properties, "sharding_key": sharding_key,
                "dedupe_id": dedupe_id, "deliver_at": deliver_at, "born": born, "body": body}


def encode_message(w, topic, body, tag=None, keys=(), properties=None, sharding_key=None, dedupe_id=None):
    flags = (1 if tag is not None else 0) | (2 if sharding_key is not None else 0) | (4 if dedupe_id is not None else 0)
    w.str(topic).u8(flags)
    if tag is not None:
        w.str(tag)
    w.u16(len(keys))
    for key in keys:
        w.str(key)
    properties = properties or {}
    w.u16(len(properties))
    for name, value in properties.items():
        w.str(name).str(value)
    if sharding_key is not None:
        w.str(sharding_key)
    if dedupe_id is not None:
        w.str(dedupe_id)
    w.i64(0).bytes(body)


class JunctionClient:
    def __init__(self, host="127.0.0.1", port=7400, name="python", token=None):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.next_request = 1
        self.next_subscription = 1
        self.pushed = {}  # subscription id -> deliveries pushed before they were asked for
        self.checkers = {}  # producer group -> function(check) returning COMMIT, ROLLBACK or UNKNOWN
        opcode, payload = self.request(HELLO, Writer().u16(VERSION).str(name).opt_str(token).build())
        if opcode != HELLO_OK:
            raise JunctionError(0, f"unexpected answer to HELLO: {opcode:#x}")

    # -- frames --------------------------------------------------------------

    def send(self, opcode, payload, request_id):
        self.sock.sendall(struct.pack(">IBI", 5 + len(payload), opcode, request_id) + payload)

    def read_frame(self):
        while True:
            if len(self.buffer) >= 4:
                (length,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + length:
                    frame = self.buffer[4:4 + length]
                    self.buffer = self.buffer[4 + length:]
                    opcode, request_id = struct.unpack(">BI", frame[:5])
                    return opcode, request_id, frame[5:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise JunctionError(0, "the server closed the connection")
            self.buffer += chunk

    def request(self, opcode, payload):
        """Sends a request and returns its answer; pushed deliveries that arrive meanwhile are kept."""
        request_id = self.next_request
        self.next_request += 1
        self.send(opcode, payload, request_id)
        while True:
            answer, answer_id, body = self.read_frame()
            if answer_id == request_id:
                if answer == ERROR:
                    r = Reader(body)
                    raise JunctionError(r.u16(), r.str())
                return answer, body
            self.keep_unsolicited(answer, body)

    def keep_unsolicited(self, opcode, body):
        if opcode == TX_CHECK:
            r = Reader(body)
            check = {"transaction": r.str(), "producer_group": r.str(), "attempt": r.u16()}
            check["messages"] = [r.message() for _ in range(r.u16())]
            answer = self.checkers.get(check["producer_group"], lambda _: UNKNOWN)(check)
            if answer != UNKNOWN:
                self.send(TX_END, Writer().str(check["transaction"]).u8(answer).build(), 0)
        elif opcode == DELIVERIES:
            r = Reader(body)
            subscription = r.u32()
            self.pushed.setdefault(subscription, []).extend(read_deliveries(r))
        elif opcode == ERROR:
            r = Reader(body)
            raise JunctionError(r.u16(), r.str())

    # -- publishing ------------------------------------------------------------

    def publish(self, topic, bodies, tag=None, properties=None, dedupe_ids=None):
        """Publishes messages with receipts: returns one receipt dict per message, once stored."""
        w = Writer().u8(1).u16(len(bodies))
        for index, body in enumerate(bodies):
            encode_message(w, topic, body, tag=tag, properties=properties,
                           dedupe_id=dedupe_ids[index] if dedupe_ids else None)
        _, payload = self.request(PUBLISH, w.build())
        r = Reader(payload)
        receipts = []
        for _ in range(r.u16()):
            receipt = {"id": r.id(), "queue": r.u16(), "offset": r.u64(), "stored": r.i64()}
            flags = r.u8()
            receipt["duplicate"] = bool(flags & 1)
            if flags & 2:
                receipt["deliver_at"] = r.i64()
            receipt["topic"] = r.str()
            receipts.append(receipt)
        return receipts

    # -- consuming -------------------------------------------------------------

    def subscribe(self, topic, group, tags="*", where=None, start="latest", credit=64, ack=True, temporary=False):
        """Subscribes (push). With temporary=True the group is this subscription's alone:
        the broker never saves its progress and removes it when the subscription ends."""
        subscription = self.next_subscription
        self.next_subscription += 1
        w = Writer().u32(subscription).str(topic).str(tags).opt_str(where).str(group)
        w.u8(0).u8(1 if ack else 0)
        w.u8({"earliest": 0, "latest": 1}[start])
        w.u32(credit).u32(0).u16(0).u16(0).u8(4 if temporary else 0).opt_str(None)
        self.request(SUBSCRIBE, w.build())
        return subscription

    def deliveries(self, subscription, count):
        """Yields `count` pushed deliveries of a subscription."""
        given = 0
        while given < count:
            waiting = self.pushed.get(subscription, [])
            while waiting and given < count:
                given += 1
                yield waiting.pop(0)
            if given < count:
                opcode, _, body = self.read_frame()
                self.keep_unsolicited(opcode, body)

    def ack(self, subscription, deliveries, confirm=False):
        """Acknowledges deliveries. Without confirm it is fire and forget (request id 0,
        no answer); with confirm=True it waits for OK, and raises JunctionError 17 if the
        server never delivered one of them (a wrong queue or offset)."""
        w = Writer().u32(subscription).u32(len(deliveries))
        for delivery in deliveries:
            w.u16(delivery["queue"]).u64(delivery["offset"])
        if confirm:
            self.request(ACK, w.build())
        else:
            self.send(ACK, w.build(), 0)

    def nack(self, subscription, deliveries, delay_ms=-1, confirm=False):
        """Gives deliveries back for redelivery after delay_ms (-1: the group's backoff;
        0 to 86400000). confirm=True waits for the answer, as for ack."""
        if delay_ms != -1 and not 0 <= delay_ms <= 86_400_000:
            raise ValueError("delay_ms is -1 (the group's backoff) or 0 to 86400000")
        w = Writer().u32(subscription).i32(delay_ms).u32(len(deliveries))
        for delivery in deliveries:
            w.u16(delivery["queue"]).u64(delivery["offset"])
        if confirm:
            self.request(NACK, w.build())
        else:
            self.send(NACK, w.build(), 0)

    # -- transactions ------------------------------------------------------------

    def prepare(self, topic, bodies, producer_group="default", timeout_ms=0, dedupe_ids=None, acks=None):
        """Prepares a transaction: the messages are stored but invisible until commit.
        acks=(subscription, [deliveries]) names deliveries the commit consumes in the
        same step. Returns (transaction id, [message ids they will be delivered under])."""
        subscription, acked = acks if acks else (0, [])
        w = Writer().str(producer_group).u32(timeout_ms).u32(subscription).u32(len(acked))
        for delivery in acked:
            w.u16(delivery["queue"]).u64(delivery["offset"])
        w.u16(len(bodies))
        for index, body in enumerate(bodies):
            encode_message(w, topic, body, dedupe_id=dedupe_ids[index] if dedupe_ids else None)
        _, payload = self.request(TX_PREPARE, w.build())
        r = Reader(payload)
        transaction = r.str()
        return transaction, [r.id() for _ in range(r.u16())]

    def commit(self, transaction):
        """Makes a prepared transaction visible (repeating it changes nothing)."""
        self.request(TX_END, Writer().str(transaction).u8(COMMIT).build())

    def rollback(self, transaction):
        """Discards a prepared transaction; raises JunctionError 15 after a commit."""
        self.request(TX_END, Writer().str(transaction).u8(ROLLBACK).build())

    def answer_checks(self, producer_group, decide):
        """decide(check) answers the broker's checks of the group's undecided transactions
        (COMMIT, ROLLBACK or UNKNOWN); checks are read while this client waits for answers
        or deliveries (poll() reads them when nothing else does)."""
        self.checkers[producer_group] = decide
        self.request(TX_CHECKER, Writer().str(producer_group).build())

    def poll(self):
        """Reads one unsolicited frame (a pushed delivery or a check) and handles it."""
        opcode, _, body = self.read_frame()
        self.keep_unsolicited(opcode, body)

    def list_transactions(self):
        """The open transactions: dicts of id, producer_group, state, checks, topics."""
        _, payload = self.request(TX_LIST, b"")
        r = Reader(payload)
        result = []
        for _ in range(r.u16()):
            item = {"id": r.str(), "producer_group": r.str(), "state": ["open", "check-max", "committing"][r.u8()],
                    "prepared_at": r.i64(), "checks": r.u16(), "next_check_at": r.i64(), "acks": r.u32()}
            item["topics"] = [r.str() for _ in range(r.u16())]
            result.append(item)
        return result

    def ping(self):
        self.request(PING, b"")

    def list_topics(self):
        _, payload = self.request(LIST_TOPICS, b"")
        r = Reader(payload)
        return {r.str(): r.u16() for _ in range(r.u16())}

    def close(self):
        self.sock.close()


def read_deliveries(r):
    deliveries = []
    for _ in range(r.u16()):
        delivery = {"id": r.id(), "queue": r.u16(), "offset": r.u64(), "stored": r.i64(), "attempt": r.u16()}
        delivery.update(r.message())
        deliveries.append(delivery)
    return deliveries
