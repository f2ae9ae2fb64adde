/* Batched UDP receive and send for the DNS server: recvmmsg(2) and sendmmsg(2), loaded with ctypes
 * (nodeagent/dns/udpbatch.py). One system call moves up to MAX_BATCH datagrams, where Python's
 * socket module needs one recvfrom and one sendto per query (the profile of issue 23: those two
 * calls and the event loop around them were most of a query's cost).
 *
 * The Python side owns every buffer: `n` slots of `slot` bytes (a datagram each), an int per slot for
 * its length, and a struct sockaddr_in6 per slot for the peer (large enough for IPv4 too) with its
 * length. An answer is written into its query's slot, so the peer address is reused as it came.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_BATCH 256

int na_max_batch(void) { return MAX_BATCH; }

/* Receive up to n datagrams without blocking. Returns how many (>= 1), or -errno (-EAGAIN when
 * nothing is queued). A datagram longer than the slot is cut to `slot` bytes: the caller, whose slot
 * is one byte larger than the largest query it accepts, sees it as oversized. */
int na_recv(int fd, unsigned char *buf, int slot, int n, int *lens, struct sockaddr_in6 *addrs,
            int *addrlens) {
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    if (n > MAX_BATCH) n = MAX_BATCH;
    if (n < 1) return -EINVAL;
    memset(msgs, 0, sizeof(msgs[0]) * (size_t)n);
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = buf + (size_t)i * (size_t)slot;
        iov[i].iov_len = (size_t)slot;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(addrs[i]);
    }
    int got;
    do {
        got = recvmmsg(fd, msgs, (unsigned int)n, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got < 0) return -errno;
    for (int i = 0; i < got; i++) {
        lens[i] = (int)msgs[i].msg_len;
        addrlens[i] = (int)msgs[i].msg_hdr.msg_namelen;
    }
    return got;
}

/* Send slot i (lens[i] bytes) to addrs[i] for every i < n with lens[i] > 0, without blocking.
 * Returns how many were sent; *failed gets how many were not (a full send buffer, or an error
 * for one destination, which skips that datagram only: UDP may lose, the client asks again). */
int na_send(int fd, unsigned char *buf, int slot, int n, const int *lens, struct sockaddr_in6 *addrs,
            const int *addrlens, int *failed) {
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    int k = 0, sent = 0;
    if (n > MAX_BATCH) n = MAX_BATCH;
    *failed = 0;
    for (int i = 0; i < n; i++) {
        if (lens[i] <= 0) continue;
        iov[k].iov_base = buf + (size_t)i * (size_t)slot;
        iov[k].iov_len = (size_t)lens[i];
        memset(&msgs[k], 0, sizeof(msgs[k]));
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
        msgs[k].msg_hdr.msg_name = &addrs[i];
        msgs[k].msg_hdr.msg_namelen = (socklen_t)addrlens[i];
        k++;
    }
    int off = 0;
    while (off < k) {
        int r = sendmmsg(fd, msgs + off, (unsigned int)(k - off), MSG_DONTWAIT);
        if (r > 0) {
            sent += r;
            off += r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  /* full: drop the rest */
        off++;  /* this destination failed (no route, ...): skip it, send the others */
        (*failed)++;
    }
    *failed += k - off;
    return sent;
}
