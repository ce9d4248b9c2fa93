/*
 * zmqbench: ZeroMQ PUSH -> PULL ingest, raw libzmq on both sides or a PUSH
 * into Junction's PULL plugin. Built by scripts/setup-bench.sh; run by the
 * `zmq` section of junction-bench.
 *
 *   zmqbench raw COUNT SIZE
 *       A PULL socket bound on 127.0.0.1 (kernel-chosen port) in one thread, a
 *       PUSH socket connected to it in another: COUNT messages of SIZE bytes.
 *       Prints `received=COUNT seconds=S rate=R` (from the first send to the
 *       last receive).
 *
 *   zmqbench push ENDPOINT COUNT SIZE
 *       Connects a PUSH socket to ENDPOINT and sends COUNT messages of SIZE
 *       bytes, then waits (linger) until libzmq has written them all. Prints
 *       `sent=COUNT seconds=S`. Whoever runs it measures how long the other
 *       side took to store them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <zmq.h>

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void fail(const char *what) {
    fprintf(stderr, "zmqbench: %s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

static void *context_of_run;

static void send_all(void *push, long count, int size) {
    char *body = malloc(size);
    memset(body, 'z', size);
    for (long i = 0; i < count; i++) {
        if (zmq_send(push, body, size, 0) < 0) fail("send");
    }
    free(body);
}

struct pull_run {
    void *pull;
    long count;
    double last;
};

static void *pull_thread(void *argument) {
    struct pull_run *run = argument;
    char buffer[65536];
    for (long i = 0; i < run->count; i++) {
        if (zmq_recv(run->pull, buffer, sizeof buffer, 0) < 0) fail("recv");
    }
    run->last = now_seconds();
    return NULL;
}

static void *open_socket(int type) {
    void *socket = zmq_socket(context_of_run, type);
    if (!socket) fail("zmq_socket");
    int hwm = 1000;  /* libzmq's default, as the Junction plugin's */
    zmq_setsockopt(socket, type == ZMQ_PUSH ? ZMQ_SNDHWM : ZMQ_RCVHWM, &hwm, sizeof hwm);
    return socket;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: zmqbench raw COUNT SIZE | push ENDPOINT COUNT SIZE\n");
        return 2;
    }
    context_of_run = zmq_ctx_new();
    if (strcmp(argv[1], "raw") == 0 && argc == 4) {
        long count = atol(argv[2]);
        int size = atoi(argv[3]);
        void *pull = open_socket(ZMQ_PULL);
        if (zmq_bind(pull, "tcp://127.0.0.1:*") != 0) fail("bind");
        char endpoint[256];
        size_t length = sizeof endpoint;
        zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, endpoint, &length);
        struct pull_run run = { pull, count, 0 };
        pthread_t thread;
        pthread_create(&thread, NULL, pull_thread, &run);
        void *push = open_socket(ZMQ_PUSH);
        if (zmq_connect(push, endpoint) != 0) fail("connect");
        double started = now_seconds();
        send_all(push, count, size);
        pthread_join(thread, NULL);
        double seconds = run.last - started;
        printf("received=%ld seconds=%.4f rate=%.0f\n", count, seconds, count / seconds);
        zmq_close(push);
        zmq_close(pull);
    } else if (strcmp(argv[1], "push") == 0 && argc == 5) {
        long count = atol(argv[3]);
        int size = atoi(argv[4]);
        void *push = open_socket(ZMQ_PUSH);
        int linger = -1;  /* close waits until everything is written */
        zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_connect(push, argv[2]) != 0) fail("connect");
        double started = now_seconds();
        send_all(push, count, size);
        zmq_close(push);
        printf("sent=%ld seconds=%.4f\n", count, now_seconds() - started);
    } else {
        fprintf(stderr, "usage: zmqbench raw COUNT SIZE | push ENDPOINT COUNT SIZE\n");
        return 2;
    }
    zmq_ctx_term(context_of_run);
    return 0;
}
