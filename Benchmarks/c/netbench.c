/*
 * netbench: a plain C client for Junction's native protocol (written from
 * docs/PROTOCOL.md) and for NATS (core and JetStream), so that `make bench`
 * drives both servers with the same code: blocking sockets, one thread per
 * connection, many commands per write.
 *
 *   netbench junction|nats PORT pubsub COUNT SUBSCRIBERS none|explicit
 *       one publisher pipelines COUNT oneway 100-byte messages, 256 per write;
 *       SUBSCRIBERS connections each receive all of them (Junction: one group
 *       each; explicit: acks of everything one read brought, in one ACK).
 *       Prints: seconds=S published=P/s delivered=D/s
 *   netbench junction|jetstream PORT publish COUNT INFLIGHT
 *       pipelined publish with receipts (Junction) or acks (JetStream file
 *       stream), at most INFLIGHT unanswered. Prints: seconds=S published=P/s
 *   netbench junction|nats PORT latency RATE SECONDS
 *       open loop: message i is due at start + i/RATE and carries that time;
 *       latency is measured from it to arrival at one subscriber, so a stall
 *       delays every message behind it and is counted. Prints percentiles in µs.
 *
 * With NETBENCH_SUB_PORT set, subscribers connect to that port instead (a
 * second gateway on the same database as the publisher's).
 *
 * Exit 1 with a message on stderr on any error or a bounded wait that ran out.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { JUNCTION, NATS, JETSTREAM };

static enum kind kind;
static int port;
static const int body_bytes = 100;

static void die(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, "netbench: ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) die("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval timeout = {.tv_sec = 60};  /* no read waits forever */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    return fd;
}

static void send_all(int fd, const uint8_t *bytes, size_t count) {
    while (count > 0) {
        ssize_t n = write(fd, bytes, count);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write: %s", strerror(errno));
        bytes += n;
        count -= (size_t)n;
    }
}

/* MARK: an output buffer */

struct out { uint8_t *bytes; size_t count, capacity; };

static void reserve(struct out *o, size_t more) {
    if (o->count + more <= o->capacity) return;
    while (o->count + more > o->capacity) o->capacity = o->capacity ? o->capacity * 2 : 4096;
    o->bytes = realloc(o->bytes, o->capacity);
    if (!o->bytes) die("out of memory");
}
static void put(struct out *o, const void *bytes, size_t count) { reserve(o, count); memcpy(o->bytes + o->count, bytes, count); o->count += count; }
static void put8(struct out *o, uint8_t v) { put(o, &v, 1); }
static void put16(struct out *o, uint16_t v) { uint8_t b[2] = {v >> 8, v}; put(o, b, 2); }
static void put32(struct out *o, uint32_t v) { uint8_t b[4] = {v >> 24, v >> 16, v >> 8, v}; put(o, b, 4); }
static void put64(struct out *o, uint64_t v) { put32(o, (uint32_t)(v >> 32)); put32(o, (uint32_t)v); }
static void putstr(struct out *o, const char *s) { size_t n = strlen(s); put16(o, (uint16_t)n); put(o, s, n); }
static void putf(struct out *o, const char *format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(text, sizeof text, format, args);
    va_end(args);
    put(o, text, (size_t)n);
}
static void flush_out(int fd, struct out *o) { send_all(fd, o->bytes, o->count); o->count = 0; }

/* A Junction frame: length, opcode, request id, then the payload put by the caller. */
static size_t frame_begin(struct out *o, uint8_t opcode, uint32_t request) {
    size_t at = o->count;
    put32(o, 0);
    put8(o, opcode);
    put32(o, request);
    return at;
}
static void frame_end(struct out *o, size_t at) {
    uint32_t length = (uint32_t)(o->count - at - 4);
    uint8_t b[4] = {length >> 24, length >> 16, length >> 8, length};
    memcpy(o->bytes + at, b, 4);
}

static void put_body(struct out *o, uint64_t stamp) {
    uint8_t body[100];
    memset(body, 'j', sizeof body);
    memcpy(body, &stamp, 8);
    put(o, body, sizeof body);
}

/* One message to `topic`: oneway when request is 0. */
static void put_publish(struct out *o, const char *topic, uint32_t request, uint64_t stamp) {
    if (kind == JUNCTION) {
        size_t at = frame_begin(o, 0x10, request);
        put8(o, request ? 1 : 0);
        put16(o, 1);
        putstr(o, topic);
        put8(o, 0);            /* no tag, sharding key, dedupe id, deliver-at */
        put16(o, 0);           /* keys */
        put16(o, 0);           /* properties */
        put64(o, 0);           /* born: when stored */
        put32(o, (uint32_t)body_bytes);
        put_body(o, stamp);
        frame_end(o, at);
    } else if (request) {
        putf(o, "PUB %s _INBOX.acks.%u %d\r\n", topic, request, body_bytes);
        put_body(o, stamp);
        put(o, "\r\n", 2);
    } else {
        putf(o, "PUB %s %d\r\n", topic, body_bytes);
        put_body(o, stamp);
        put(o, "\r\n", 2);
    }
}

/* MARK: an input buffer and the events read from it */

struct in { int fd; uint8_t *bytes; size_t start, end, capacity; };

/* Reads more; returns 0 at EOF. */
static int fill(struct in *i) {
    if (i->start > 0 && i->start == i->end) i->start = i->end = 0;
    if (i->end == i->capacity) {
        if (i->start > 0) {
            memmove(i->bytes, i->bytes + i->start, i->end - i->start);
            i->end -= i->start;
            i->start = 0;
        } else {
            i->capacity = i->capacity ? i->capacity * 2 : 1 << 18;
            i->bytes = realloc(i->bytes, i->capacity);
            if (!i->bytes) die("out of memory");
        }
    }
    ssize_t n;
    do { n = read(i->fd, i->bytes + i->end, i->capacity - i->end); } while (n < 0 && errno == EINTR);
    if (n < 0) die("read: %s (a wait of 60 s ran out, or the connection broke)", strerror(errno));
    i->end += (size_t)n;
    return n > 0;
}

struct events {
    uint64_t delivered, acked, subscribed, pongs;
    /* explicit acks to send: (queue, offset) pairs */
    struct out acks;
    uint32_t ack_count;
    /* arrival − stamp, µs, when recording */
    uint32_t *latencies;
    size_t latency_count, latency_capacity;
    int record;
};

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void record(struct events *e, const uint8_t *body, uint64_t now) {
    if (!e->record) return;
    uint64_t stamp;
    memcpy(&stamp, body, 8);
    if (e->latency_count == e->latency_capacity) {
        e->latency_capacity = e->latency_capacity ? e->latency_capacity * 2 : 1 << 16;
        e->latencies = realloc(e->latencies, e->latency_capacity * sizeof(uint32_t));
        if (!e->latencies) die("out of memory");
    }
    e->latencies[e->latency_count++] = (uint32_t)((now > stamp ? now - stamp : 0) / 1000);
}

/* Skips a Junction Message at p; returns the body and sets the end. */
static const uint8_t *junction_message(const uint8_t *p, const uint8_t **after) {
    p += 2 + get16(p);                               /* topic */
    uint8_t flags = *p++;
    if (flags & 1) p += 2 + get16(p);                /* tag */
    uint16_t keys = get16(p); p += 2;
    while (keys--) p += 2 + get16(p);
    uint16_t properties = get16(p); p += 2;
    while (properties--) { p += 2 + get16(p); p += 2 + get16(p); }
    if (flags & 2) p += 2 + get16(p);                /* sharding key */
    if (flags & 4) p += 2 + get16(p);                /* dedupe id */
    if (flags & 8) p += 8;                           /* deliver-at */
    p += 8;                                          /* born */
    uint32_t length = get32(p); p += 4;
    *after = p + length;
    return p;
}

/* Handles every complete Junction frame in the buffer. */
static void junction_frames(struct in *i, struct events *e) {
    uint64_t now = e->record ? now_ns() : 0;
    while (i->end - i->start >= 4) {
        const uint8_t *f = i->bytes + i->start;
        uint32_t length = get32(f);
        if (i->end - i->start < 4 + (size_t)length) break;
        uint8_t opcode = f[4];
        const uint8_t *p = f + 9;
        switch (opcode) {
        case 0x81: break;                           /* HELLO_OK */
        case 0x82: e->pongs++; break;               /* PONG */
        case 0xA0: e->subscribed++; break;
        case 0x90: e->acked += get16(p); break;      /* RECEIPTS */
        case 0xA1: {                                 /* DELIVERIES */
            uint16_t count = get16(p + 4);
            p += 6;
            for (uint16_t n = 0; n < count; n++) {
                const uint8_t *tag = p + 12;         /* after the id: u16 queue, u64 offset */
                put(&e->acks, tag, 10);
                e->ack_count++;
                p += 12 + 2 + 8 + 8 + 2;
                const uint8_t *after;
                const uint8_t *body = junction_message(p, &after);
                record(e, body, now);
                p = after;
            }
            e->delivered += count;
            break;
        }
        case 0xFF: die("ERROR %u from the server: %.*s", get16(p), (int)get16(p + 2), (const char *)p + 4);
        default: break;
        }
        i->start += 4 + length;
    }
}

/* Handles every complete NATS line (and message payload) in the buffer; answers PING. */
static void nats_lines(int fd, struct in *i, struct events *e) {
    uint64_t now = e->record ? now_ns() : 0;
    while (i->end > i->start) {
        uint8_t *line = i->bytes + i->start;
        uint8_t *eol = memmem(line, i->end - i->start, "\r\n", 2);
        if (!eol) break;
        size_t line_bytes = (size_t)(eol - line) + 2;
        if (line_bytes >= 4 && memcmp(line, "MSG ", 4) == 0) {
            /* MSG subject sid [reply] length */
            uint8_t *space = eol;
            while (space > line && space[-1] != ' ') space--;
            size_t length = strtoul((const char *)space, NULL, 10);
            if (i->end - i->start < line_bytes + length + 2) break;
            const uint8_t *payload = line + line_bytes;
            char *sid = memchr(line + 4, ' ', line_bytes - 4);
            if (sid && strncmp(sid + 1, "2 ", 2) == 0) e->acked++;       /* a JetStream ack */
            else if (sid && strncmp(sid + 1, "9 ", 2) == 0) e->subscribed++;  /* the stream-created answer */
            else { e->delivered++; record(e, payload, now); }
            i->start += line_bytes + length + 2;
            continue;
        }
        if (line_bytes >= 6 && memcmp(line, "PING", 4) == 0) send_all(fd, (const uint8_t *)"PONG\r\n", 6);
        else if (line_bytes >= 6 && memcmp(line, "PONG", 4) == 0) e->pongs++;
        else if (line_bytes >= 4 && memcmp(line, "-ERR", 4) == 0) die("%.*s", (int)line_bytes - 2, (const char *)line);
        i->start += line_bytes;
    }
}

static void handle(struct in *i, struct events *e) {
    if (kind == JUNCTION) junction_frames(i, e); else nats_lines(i->fd, i, e);
}

/* Reads until `*counter` reaches `target`. */
static void read_until(struct in *i, struct events *e, uint64_t *counter, uint64_t target, const char *what) {
    while (*counter < target) {
        if (!fill(i)) die("the server closed the connection while waiting for %s", what);
        handle(i, e);
    }
}

static void hello(int fd) {
    struct out o = {0};
    if (kind == JUNCTION) {
        size_t at = frame_begin(&o, 0x01, 1);
        put16(&o, 1);
        putstr(&o, "netbench");
        put8(&o, 0);
        frame_end(&o, at);
    } else {
        putf(&o, "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
    }
    flush_out(fd, &o);
    free(o.bytes);
}

/* A round trip: everything sent before it has been read by the server. */
static void ping(int fd, struct in *i, struct events *e) {
    struct out o = {0};
    if (kind == JUNCTION) frame_end(&o, frame_begin(&o, 0x02, 2)); else putf(&o, "PING\r\n");
    flush_out(fd, &o);
    free(o.bytes);
    uint64_t target = e->pongs + 1;
    read_until(i, e, &e->pongs, target, "an answer to PING");
}

/* MARK: subscribers */

struct subscriber {
    pthread_t thread;
    int fd;
    int explicit_acks;
    uint64_t target;
    struct in in;
    struct events events;
    uint64_t finished_ns;
    char group[32];
};

static void subscribe(struct subscriber *s) {
    /* NETBENCH_SUB_PORT: subscribers on another server than the publisher (two gateways on one database). */
    const char *elsewhere = getenv("NETBENCH_SUB_PORT");
    int publisher_port = port;
    if (elsewhere) port = atoi(elsewhere);
    s->fd = dial();
    port = publisher_port;
    s->in.fd = s->fd;
    hello(s->fd);
    struct out o = {0};
    if (kind == JUNCTION) {
        size_t at = frame_begin(&o, 0x20, 3);
        put32(&o, 1);
        putstr(&o, "bench");
        putstr(&o, "*");
        put8(&o, 0);                          /* no where */
        putstr(&o, s->group);
        put8(&o, 0);                          /* clustering */
        put8(&o, s->explicit_acks ? 1 : 0);
        put8(&o, 1);                          /* start latest */
        put32(&o, s->explicit_acks ? 1024 : 8192);
        put32(&o, 0);
        put16(&o, 0);
        put16(&o, 0);
        put8(&o, 4);                          /* temporary */
        put8(&o, 0);                          /* no consumer id */
        frame_end(&o, at);
        flush_out(s->fd, &o);
        read_until(&s->in, &s->events, &s->events.subscribed, 1, "SUBSCRIBED");
    } else {
        putf(&o, "SUB bench 1\r\n");
        flush_out(s->fd, &o);
        ping(s->fd, &s->in, &s->events);
    }
    free(o.bytes);
}

static void *consume(void *argument) {
    struct subscriber *s = argument;
    struct out ack = {0};
    while (s->events.delivered < s->target) {
        if (!fill(&s->in)) die("the server closed a subscriber's connection after %llu deliveries", (unsigned long long)s->events.delivered);
        handle(&s->in, &s->events);
        if (s->explicit_acks && s->events.ack_count > 0) {
            /* One ACK for everything this read brought, no answer wanted. */
            size_t at = frame_begin(&ack, 0x23, 0);
            put32(&ack, 1);
            put32(&ack, s->events.ack_count);
            put(&ack, s->events.acks.bytes, s->events.acks.count);
            frame_end(&ack, at);
            flush_out(s->fd, &ack);
        }
        s->events.acks.count = 0;
        s->events.ack_count = 0;
    }
    s->finished_ns = now_ns();
    free(ack.bytes);
    return NULL;
}

static struct subscriber *start_subscribers(int count, int explicit_acks, uint64_t target, int record_latency) {
    struct subscriber *all = calloc((size_t)count, sizeof *all);
    for (int n = 0; n < count; n++) {
        all[n].explicit_acks = explicit_acks;
        all[n].target = target;
        all[n].events.record = record_latency;
        snprintf(all[n].group, sizeof all[n].group, "netbench-%d-%d", (int)getpid(), n);
        subscribe(&all[n]);
    }
    for (int n = 0; n < count; n++) pthread_create(&all[n].thread, NULL, consume, &all[n]);
    return all;
}

/* MARK: loads */

static void pubsub(uint64_t count, int subscribers, int explicit_acks) {
    struct subscriber *all = start_subscribers(subscribers, explicit_acks, count, 0);
    int fd = dial();
    hello(fd);
    struct out o = {0};
    uint64_t started = now_ns();
    for (uint64_t sent = 0; sent < count;) {
        for (int n = 0; n < 256 && sent < count; n++, sent++) put_publish(&o, "bench", 0, sent);
        flush_out(fd, &o);
    }
    /* PONG: the server has read every publish (with no subscriber, the end of the load). */
    struct in answers = {.fd = fd};
    struct events ignored = {0};
    ping(fd, &answers, &ignored);
    uint64_t published = now_ns();
    uint64_t finished = subscribers > 0 ? started : published;
    for (int n = 0; n < subscribers; n++) {
        pthread_join(all[n].thread, NULL);
        if (all[n].finished_ns > finished) finished = all[n].finished_ns;
    }
    double seconds = (double)(finished - started) / 1e9;
    printf("seconds=%.3f published=%.0f delivered=%.0f sendSeconds=%.3f\n", seconds, (double)count / seconds,
           (double)count * subscribers / seconds, (double)(published - started) / 1e9);
    close(fd);
}

/* Reads answers on the publisher's connection. A publisher with a full
 * window sleeps on `more` until answers come: polling instead (a 20 µs nap in
 * a loop) took about a quarter of a core for four publishers waiting on
 * PostgreSQL commits, CPU the server under test then lacked on 2 cores. */
struct answers {
    pthread_t thread; struct in in; struct events events; uint64_t target; _Atomic uint64_t seen;
    pthread_mutex_t lock; pthread_cond_t more; int waiting;
};

static void *read_answers(void *argument) {
    struct answers *a = argument;
    while (a->events.acked < a->target) {
        if (!fill(&a->in)) die("the server closed the connection after %llu answers", (unsigned long long)a->events.acked);
        handle(&a->in, &a->events);
        atomic_store(&a->seen, a->events.acked);
        pthread_mutex_lock(&a->lock);
        if (a->waiting) pthread_cond_signal(&a->more);
        pthread_mutex_unlock(&a->lock);
    }
    return NULL;
}

static void publish_with_receipts(uint64_t count, uint64_t window) {
    int fd = dial();
    struct answers a = {.in = {.fd = fd}, .target = count};
    pthread_mutex_init(&a.lock, NULL);
    pthread_cond_init(&a.more, NULL);
    hello(fd);
    struct out o = {0};
    if (kind == JETSTREAM) {
        const char *create = "{\"name\":\"NETBENCH\",\"subjects\":[\"bench\"],\"storage\":\"file\",\"retention\":\"limits\"}";
        putf(&o, "SUB _INBOX.create 9\r\nSUB _INBOX.acks.* 2\r\nPUB $JS.API.STREAM.CREATE.NETBENCH _INBOX.create %zu\r\n%s\r\n", strlen(create), create);
        flush_out(fd, &o);
        read_until(&a.in, &a.events, &a.events.subscribed, 1, "the stream-created answer");
    }
    ping(fd, &a.in, &a.events);
    pthread_create(&a.thread, NULL, read_answers, &a);
    uint64_t started = now_ns();
    for (uint64_t sent = 0; sent < count;) {
        uint64_t answered = atomic_load(&a.seen);
        if (sent - answered >= window) {
            pthread_mutex_lock(&a.lock);
            a.waiting = 1;
            while (sent - atomic_load(&a.seen) >= window) pthread_cond_wait(&a.more, &a.lock);
            a.waiting = 0;
            pthread_mutex_unlock(&a.lock);
            continue;
        }
        uint64_t room = window - (sent - answered);
        for (int n = 0; n < 256 && room > 0 && sent < count; n++, room--, sent++) put_publish(&o, "bench", (uint32_t)(sent + 10), 0);
        flush_out(fd, &o);
    }
    pthread_join(a.thread, NULL);
    double seconds = (double)(now_ns() - started) / 1e9;
    printf("seconds=%.3f published=%.0f\n", seconds, (double)count / seconds);
    close(fd);
}

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static void latency(uint64_t rate, double seconds) {
    uint64_t total = (uint64_t)((double)rate * seconds);
    struct subscriber *s = start_subscribers(1, 0, total, 1);
    int fd = dial();
    hello(fd);
    struct out o = {0};
    uint64_t interval = 1000000000u / rate;
    uint64_t start = now_ns() + 20000000u;
    for (uint64_t next = 0; next < total;) {
        uint64_t due = start + next * interval;
        uint64_t now = now_ns();
        if (due > now) {
            struct timespec until = {.tv_sec = (time_t)(due / 1000000000u), .tv_nsec = (long)(due % 1000000000u)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
            now = now_ns();
        }
        /* Everything due by now goes in one write, each stamped with its intended time. */
        while (next < total && start + next * interval <= now) {
            put_publish(&o, "bench", 0, start + next * interval);
            next++;
        }
        flush_out(fd, &o);
    }
    pthread_join(s->thread, NULL);
    struct events *e = &s->events;
    qsort(e->latencies, e->latency_count, sizeof(uint32_t), compare);
    size_t n = e->latency_count;
#define AT(p) e->latencies[(size_t)((double)(n - 1) * (p))]
    printf("count=%zu p50=%u p90=%u p99=%u p999=%u max=%u\n", n, AT(0.5), AT(0.9), AT(0.99), AT(0.999), e->latencies[n - 1]);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 4) die("usage: netbench junction|nats|jetstream PORT pubsub|publish|latency ...");
    if (strcmp(argv[1], "junction") == 0) kind = JUNCTION;
    else if (strcmp(argv[1], "nats") == 0) kind = NATS;
    else if (strcmp(argv[1], "jetstream") == 0) kind = JETSTREAM;
    else die("unknown server kind %s", argv[1]);
    port = atoi(argv[2]);
    if (strcmp(argv[3], "pubsub") == 0 && argc == 7) pubsub(strtoull(argv[4], NULL, 10), atoi(argv[5]), strcmp(argv[6], "explicit") == 0);
    else if (strcmp(argv[3], "publish") == 0 && argc == 6) publish_with_receipts(strtoull(argv[4], NULL, 10), strtoull(argv[5], NULL, 10));
    else if (strcmp(argv[3], "latency") == 0 && argc == 6) latency(strtoull(argv[4], NULL, 10), atof(argv[5]));
    else die("bad arguments; see the comment at the top of netbench.c");
    return 0;
}
