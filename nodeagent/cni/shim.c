/* nodeagent-bridge: the exec'd half of the thick CNI plugin.
 *
 * containerd execs a CNI plugin for every call; a Python interpreter that imports pyroute2 costs
 * ~200 ms per exec here, so this static program only forwards the call (CNI_* variables and the
 * netconf on stdin) to the node's CNI daemon over a unix socket and prints the daemon's reply with
 * its exit code. The socket is the netconf's "daemonSocket" string (found by a plain scan, no JSON
 * parser), else DEFAULT_SOCKET. When no daemon answers, it execs the Python plugin
 * (NA_PYTHON -I -m nodeagent.cni.main) with the same environment and stdin, which does the work
 * itself. Wire format: nodeagent/cni/protocol.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef NA_PYTHON
#define NA_PYTHON "/usr/bin/python3"
#endif
#define DEFAULT_SOCKET "/var/run/nodeagent/cni/daemon.sock"
#define MAGIC "NACNI1\n"

extern char **environ;

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { perror("nodeagent-bridge: out of memory"); exit(1); }
        b->p = p; b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static int read_all(int fd, struct buf *b) {
    char tmp[65536];
    for (;;) {
        ssize_t r = read(fd, tmp, sizeof tmp);
        if (r == 0) return 0;
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        put(b, tmp, (size_t)r);
    }
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

/* The string value of "daemonSocket" in the netconf, or the default. Escapes are not decoded:
 * such a path falls back to the default socket. */
static void socket_path(const struct buf *in, char *out, size_t outlen) {
    static const char key[] = "\"daemonSocket\"";
    snprintf(out, outlen, "%s", DEFAULT_SOCKET);
    const char *s = memmem(in->p, in->n, key, sizeof key - 1);
    if (!s) return;
    const char *end = in->p + in->n;
    s += sizeof key - 1;
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    if (s >= end || *s != ':') return;
    s++;
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    if (s >= end || *s != '"') return;
    s++;
    const char *q = s;
    while (q < end && *q != '"' && *q != '\\') q++;
    if (q >= end || *q != '"' || q == s || (size_t)(q - s) >= outlen) return;
    memcpy(out, s, (size_t)(q - s));
    out[q - s] = 0;
}

/* 0 and the reply in *reply when the daemon answered; -1 when it did not. */
static int forward(const char *path, const struct buf *in, struct buf *reply) {
    struct sockaddr_un sa;
    if (strlen(path) >= sizeof sa.sun_path) return -1;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return -1; }
    struct buf req = {0};
    put(&req, MAGIC, sizeof MAGIC - 1);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "CNI_", 4) == 0) put(&req, *e, strlen(*e) + 1);
    put(&req, "", 1);
    if (in->n) put(&req, in->p, in->n);
    int ok = write_all(fd, req.p, req.n) == 0 && shutdown(fd, SHUT_WR) == 0 && read_all(fd, reply) == 0;
    free(req.p);
    close(fd);
    return ok ? 0 : -1;
}

static void standalone(const struct buf *in) {
    /* The Python plugin reads stdin again: hand it the bytes already consumed, via a memfd. */
    int fd = memfd_create("netconf", 0);
    if (fd < 0 || write_all(fd, in->p ? in->p : "", in->n) < 0 || lseek(fd, 0, SEEK_SET) < 0 ||
        dup2(fd, 0) < 0) {
        perror("nodeagent-bridge: preparing stdin for the standalone plugin");
        exit(1);
    }
    close(fd);
    char *argv[] = {NA_PYTHON, "-I", "-m", "nodeagent.cni.main", NULL};
    execv(NA_PYTHON, argv);
    fprintf(stderr, "nodeagent-bridge: exec %s: %s\n", NA_PYTHON, strerror(errno));
    printf("{\"cniVersion\":\"1.1.0\",\"code\":999,\"msg\":\"no CNI daemon and no Python plugin\","
           "\"details\":\"exec %s failed\"}\n", NA_PYTHON);
    exit(1);
}

int main(void) {
    struct buf in = {0}, reply = {0};
    if (read_all(0, &in) < 0) { perror("nodeagent-bridge: reading stdin"); return 1; }
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    socket_path(&in, path, sizeof path);
    if (forward(path, &in, &reply) == 0) {
        char *nl = reply.n ? memchr(reply.p, '\n', reply.n) : NULL;
        if (nl && nl > reply.p) {
            int code = atoi(reply.p);
            size_t off = (size_t)(nl - reply.p) + 1;
            if (write_all(1, reply.p + off, reply.n - off) < 0) return 1;
            return code;
        }
        /* The daemon died mid-call: redo the call standalone (ADD and DEL are retry-safe). */
    }
    standalone(&in);
    return 1;
}
