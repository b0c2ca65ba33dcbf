/* Half-close probe for tests/e2e/half_close.rs, built statically and uploaded into
 * the student's container over ssh. Every exchange is one connection: the client
 * writes a message, shuts its write side down (shutdown(SHUT_WR), what `printf | nc`
 * and HTTP/1.0 clients do) and reads to EOF; the server reads to EOF and only then
 * answers "<byte count>:" followed by the message reversed, and closes.
 *
 *   probe serve PORT            serves exchanges on 127.0.0.1:PORT, one connection at
 *                               a time, for ever.
 *   probe exchange PORT N SEED  makes N exchanges with 127.0.0.1:PORT and prints one
 *                               line "ok=A lost=B wrong=C failed=D": lost means no
 *                               answer at all (EOF at once), wrong an answer that
 *                               differs, failed a connect or I/O error.
 *
 * Message i is 1 + (i * 7919 + SEED) % 3000 bytes, every 10th 100000 bytes, of a
 * pattern both sides can recompute (the test's Rust side uses the same rule).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Longest message plus its answer's prefix. */
#define MAX_MESSAGE 100000
#define MAX_ANSWER (MAX_MESSAGE + 32)

/* The length of message `i`. */
static size_t message_len(unsigned long i, unsigned long seed) {
    if (i % 10 == 9)
        return MAX_MESSAGE;
    return 1 + (i * 7919 + seed) % 3000;
}

/* Fills `buf` with message `i`'s bytes. */
static void message(unsigned char *buf, size_t len, unsigned long i) {
    for (size_t k = 0; k < len; k++)
        buf[k] = (unsigned char)('a' + (k * 31 + i) % 26);
}

/* The server's answer to `len` bytes of `msg`, into `out`; returns its length. */
static size_t answer(const unsigned char *msg, size_t len, unsigned char *out) {
    int n = snprintf((char *)out, 32, "%zu:", len);
    for (size_t k = 0; k < len; k++)
        out[n + k] = msg[len - 1 - k];
    return (size_t)n + len;
}

/* Reads `fd` to EOF into `buf` (at most `cap`); returns the count or -1. */
static ssize_t read_to_eof(int fd, unsigned char *buf, size_t cap) {
    size_t got = 0;
    for (;;) {
        if (got == cap) {
            unsigned char spill;
            ssize_t n = read(fd, &spill, 1);
            return n == 0 ? (ssize_t)got : -1;
        }
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return (ssize_t)got;
        got += (size_t)n;
    }
}

/* Writes all of `buf`; 0 on success. */
static int write_all(int fd, const unsigned char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* 127.0.0.1:`port`. */
static struct sockaddr_in loopback(int port) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

static int serve(int port) {
    static unsigned char msg[MAX_MESSAGE], out[MAX_ANSWER];
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = loopback(port);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 64) != 0) {
        printf("bind: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        int fd = accept(listener, NULL, NULL);
        if (fd < 0)
            continue;
        ssize_t n = read_to_eof(fd, msg, sizeof msg);
        if (n >= 0) {
            size_t len = answer(msg, (size_t)n, out);
            write_all(fd, out, len);
        }
        close(fd);
    }
}

static int exchange(int port, unsigned long count, unsigned long seed) {
    static unsigned char msg[MAX_MESSAGE], want[MAX_ANSWER], got[MAX_ANSWER];
    unsigned long ok = 0, lost = 0, wrong = 0, failed = 0;
    struct sockaddr_in addr = loopback(port);
    /* A reply that has not come in this long is not coming. */
    struct timeval timeout = {.tv_sec = 20, .tv_usec = 0};
    for (unsigned long i = 0; i < count; i++) {
        size_t len = message_len(i, seed);
        message(msg, len, i);
        size_t want_len = answer(msg, len, want);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || write_all(fd, msg, len) != 0 ||
            shutdown(fd, SHUT_WR) != 0) {
            failed++;
            close(fd);
            continue;
        }
        ssize_t n = read_to_eof(fd, got, sizeof got);
        close(fd);
        if (n < 0)
            failed++;
        else if (n == 0)
            lost++;
        else if ((size_t)n != want_len || memcmp(got, want, want_len) != 0)
            wrong++;
        else
            ok++;
    }
    printf("ok=%lu lost=%lu wrong=%lu failed=%lu\n", ok, lost, wrong, failed);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(atoi(argv[2]));
    if (argc == 5 && strcmp(argv[1], "exchange") == 0)
        return exchange(atoi(argv[2]), strtoul(argv[3], NULL, 10), strtoul(argv[4], NULL, 10));
    fprintf(stderr, "usage: probe serve PORT | probe exchange PORT N SEED\n");
    return 2;
}
