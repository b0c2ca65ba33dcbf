/* A process inside a container trying to use the helper's socket: it asks the helper
 * to run `touch /tmp/pwned` as root and reports what it got back. Built statically by
 * tests/helper.rs and copied into the container. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void put32(unsigned char **p, uint32_t v) {
    v = htonl(v);
    memcpy(*p, &v, 4);
    *p += 4;
}

static void putstr(unsigned char **p, const char *s) {
    put32(p, (uint32_t)strlen(s));
    memcpy(*p, s, strlen(s));
    *p += strlen(s);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/.labssh/run/helper.sock";
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        printf("connect: %s\n", strerror(errno));
        return 0;
    }
    /* A SPAWN frame (see init/src/wire.rs): length, kind, version 1, uid 0, gid 0,
     * no pty, cwd "/", argv, no env. */
    unsigned char buf[512], *p = buf + 5;
    *p++ = 0;
    *p++ = 1;
    put32(&p, 0);
    put32(&p, 0);
    memset(p, 0, 5);
    p += 5;
    putstr(&p, "/");
    put32(&p, 2);
    putstr(&p, "/bin/touch");
    putstr(&p, "/tmp/pwned");
    put32(&p, 0);
    unsigned char *head = buf;
    put32(&head, (uint32_t)(p - buf - 4));
    buf[4] = 1;
    ssize_t sent = send(fd, buf, (size_t)(p - buf), MSG_NOSIGNAL);
    ssize_t received = 0, n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        received += n;
    printf("sent %zd, received %zd bytes\n", sent, received);
    return 0;
}
