/*
 * A lean h2c load client for scripts/bench's pinned pairs: one thread, C
 * connections (HTTP/2 over cleartext, prior knowledge), M requests in flight
 * on each, the same POST repeated N times (or for D milliseconds).
 *
 *   bench-h2c (-n N | -D MS) [-c C] [-m M] [-H 'name: value']... [-d FILE] http://HOST:PORT/PATH
 *
 * Why not h2load: a load client must cost less per request than the server
 * it measures, or the client sets the pace.  On the 2-CPU machines the bench
 * runs on, h2load -t 1 spent 3.9-4.6 us of its CPU per sites.list request
 * (a pread of the body file, nghttp2's frame and header machinery, a stats
 * record per request) against the pinned alyd worker's 3.2-3.5: the pair's
 * rows then measured h2load, and a modern request, three header fields and
 * 180 body bytes longer, cost h2load 9 % more.  A starved server also reads
 * its requests in smaller batches, so each costs it more system time: alyd's
 * modern rows paid 0.2 us of kernel time per request for h2load's pace.
 *
 * What it sends is what a careful HTTP/2 client sends: the first request on
 * a connection enters every header field into the HPACK dynamic table
 * (literal with incremental indexing, no Huffman coding), the later ones name
 * them by index, as h2load and browsers do; the body goes in one DATA frame
 * within the flow-control windows the server grants.  Frames are built once,
 * so each request costs a copy of its bytes into the connection's output and
 * a share of one write.  What it reads: every frame's header; of a response
 * HEADERS frame only the :status field (each response must open with it);
 * DATA payload bytes counted, never parsed.
 *
 * Output: the summary lines of h2load (finished in, requests, status codes,
 * traffic, Application protocol) in h2load's layout, so that the bench reads
 * one format; the client's own CPU per request on stderr.  Exit 1 when the
 * connection fails or the server refuses the session.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define MAX_HEADERS 32
#define MAX_BODY 16384 /* one DATA frame of the default SETTINGS_MAX_FRAME_SIZE */
#define IN_CAP (256 * 1024)
#define HPACK_TABLE 4096 /* the default SETTINGS_HEADER_TABLE_SIZE, which alyd (h2o) keeps */
#define RECV_WINDOW 0x7fffffff

enum { F_DATA = 0, F_HEADERS = 1, F_RST_STREAM = 3, F_SETTINGS = 4, F_PING = 6, F_GOAWAY = 7, F_WINDOW_UPDATE = 8 };
enum { FL_END_STREAM = 0x1, FL_ACK = 0x1, FL_END_HEADERS = 0x4, FL_PADDED = 0x8, FL_PRIORITY = 0x20 };

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf_t;

typedef struct conn {
    int fd;
    uint32_t next_id;
    unsigned in_flight;
    int indexed;         /* the dynamic table holds our fields: later requests name them by index */
    int64_t send_window; /* the connection's window for our DATA */
    uint64_t unacked;    /* DATA bytes received since our last WINDOW_UPDATE */
    buf_t out;
    unsigned char *in;
    size_t in_len;
    int want_out;
} conn_t;

static struct {
    const char *host, *port, *path;
    unsigned conns, streams;
    uint64_t total;  /* requests to make (0 with a duration) */
    double until_ms; /* the duration (0 with -n) */
    const char *names[MAX_HEADERS], *values[MAX_HEADERS];
    size_t nheaders;
    unsigned char body[MAX_BODY];
    size_t body_len;
} opt = {.conns = 1, .streams = 1};

static buf_t first_block, next_block; /* the HEADERS frame payloads: first request of a connection, later ones */
static uint64_t started, done, status_class[6], data_bytes, header_bytes, total_bytes;
static uint32_t peer_max_streams = UINT32_MAX;
static size_t table_needed; /* of the server's HPACK table, by our indexed fields */
static int stopping;

static void die(const char *what)
{
    fprintf(stderr, "bench-h2c: %s\n", what);
    exit(1);
}

static void put(buf_t *b, const void *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        if ((b->p = realloc(b->p, cap)) == NULL)
            die("out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void put_byte(buf_t *b, unsigned char c)
{
    put(b, &c, 1);
}

/* An HPACK integer (RFC 7541 5.1) with an N-bit prefix, the first byte's high bits given. */
static void hpack_int(buf_t *b, unsigned char high, int prefix_bits, size_t v)
{
    size_t max = ((size_t)1 << prefix_bits) - 1;
    if (v < max) {
        put_byte(b, (unsigned char)(high | v));
        return;
    }
    put_byte(b, (unsigned char)(high | max));
    for (v -= max; v >= 128; v >>= 7)
        put_byte(b, (unsigned char)(0x80 | (v & 0x7f)));
    put_byte(b, (unsigned char)v);
}

static void hpack_string(buf_t *b, const char *s, size_t n)
{
    hpack_int(b, 0x00, 7, n); /* H = 0: no Huffman coding */
    put(b, s, n);
}

/* v as 4 bytes, most significant first (a stream id, a window increment). */
static void be32_put(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void frame_head(buf_t *b, size_t len, int type, int flags, uint32_t stream)
{
    unsigned char h[9] = {(unsigned char)(len >> 16), (unsigned char)(len >> 8), (unsigned char)len, (unsigned char)type,
                          (unsigned char)flags};
    be32_put(h + 5, stream);
    put(b, h, sizeof(h));
}

/* A WINDOW_UPDATE of the connection's window (stream 0) by inc. */
static void window_update(buf_t *b, uint32_t inc)
{
    unsigned char v[4];
    be32_put(v, inc);
    frame_head(b, 4, F_WINDOW_UPDATE, 0, 0);
    put(b, v, 4);
}

/*
 * The two header blocks.  The request's fields: :method POST and :scheme
 * http from the static table, then :path, :authority and every -H field, and
 * content-length when there is a body.  In the first block each of those
 * goes in as a literal with incremental indexing (by static name index where
 * the static table has the name); each insertion becomes index 62 and pushes
 * the earlier ones up by one, so in the next block the i-th of k inserted
 * fields is 62 + k - 1 - i.  When the fields would not fit the table, both
 * blocks are literals without indexing.
 */
static void build_blocks(void)
{
    static const struct {
        const char *name;
        unsigned index;
    } statics[] = {{":authority", 1},      {":path", 4},         {"accept", 19},    {"authorization", 23},
                   {"content-length", 28}, {"content-type", 31}, {"user-agent", 58}};
    const char *names[MAX_HEADERS + 3], *values[MAX_HEADERS + 3];
    size_t nl[MAX_HEADERS + 3], vl[MAX_HEADERS + 3], k = 0, table = 0;
    static char authority[520], length[24];
    snprintf(authority, sizeof(authority), "%s:%s", opt.host, opt.port);
    snprintf(length, sizeof(length), "%zu", opt.body_len);
    names[k] = ":path", values[k++] = opt.path;
    names[k] = ":authority", values[k++] = authority;
    for (size_t i = 0; i < opt.nheaders; i++)
        names[k] = opt.names[i], values[k++] = opt.values[i];
    if (opt.body_len > 0)
        names[k] = "content-length", values[k++] = length;
    for (size_t i = 0; i < k; i++) {
        nl[i] = strlen(names[i]), vl[i] = strlen(values[i]);
        table += nl[i] + vl[i] + 32;
    }
    int index = table <= HPACK_TABLE;
    table_needed = index ? table : 0;
    buf_t *blocks[2] = {&first_block, &next_block};
    for (int b = 0; b < 2; b++) {
        put_byte(blocks[b], 0x83); /* :method POST */
        put_byte(blocks[b], 0x86); /* :scheme http */
        for (size_t i = 0; i < k; i++) {
            if (b == 1 && index) {
                hpack_int(blocks[b], 0x80, 7, 62 + k - 1 - i);
                continue;
            }
            unsigned si = 0;
            for (size_t s = 0; s < sizeof(statics) / sizeof(statics[0]); s++)
                if (strcmp(statics[s].name, names[i]) == 0)
                    si = statics[s].index;
            hpack_int(blocks[b], index ? 0x40 : 0x00, index ? 6 : 4, si);
            if (si == 0)
                hpack_string(blocks[b], names[i], nl[i]);
            hpack_string(blocks[b], values[i], vl[i]);
        }
    }
}

static void flush(conn_t *c, int ep)
{
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + off, c->out.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0)
            die("write failed: the server closed the connection");
        off += (size_t)n;
    }
    memmove(c->out.p, c->out.p + off, c->out.len - off);
    c->out.len -= off;
    int want = c->out.len > 0;
    if (want != c->want_out) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_out = want;
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double start_ms;

/* This process's CPU time so far (user + system), in seconds. */
static double cpu_s(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        die("getrusage");
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int more_to_start(void)
{
    if (stopping)
        return 0;
    if (opt.total > 0)
        return started < opt.total;
    if (now_ms() - start_ms >= opt.until_ms)
        stopping = 1;
    return !stopping;
}

/* Queues requests on c while it has room for them: streams, the window for their bodies, requests left to make. */
static void fill(conn_t *c)
{
    unsigned limit = opt.streams < peer_max_streams ? opt.streams : peer_max_streams;
    while (c->in_flight < limit && c->send_window >= (int64_t)opt.body_len && more_to_start()) {
        if (c->next_id > 0x7ffffff0)
            die("a connection ran out of stream ids: use more connections");
        buf_t *block = c->indexed ? &next_block : &first_block;
        c->indexed = 1;
        frame_head(&c->out, block->len, F_HEADERS, FL_END_HEADERS | (opt.body_len ? 0 : FL_END_STREAM), c->next_id);
        put(&c->out, block->p, block->len);
        if (opt.body_len) {
            frame_head(&c->out, opt.body_len, F_DATA, FL_END_STREAM, c->next_id);
            put(&c->out, opt.body, opt.body_len);
            c->send_window -= (int64_t)opt.body_len;
        }
        c->next_id += 2;
        c->in_flight++;
        started++;
    }
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The status class (2 for 2xx ... 5; 0 unknown) from a response header block's first field, which must be :status. */
static int status_of(const unsigned char *p, size_t n)
{
    if (n == 0)
        return 0;
    if (p[0] & 0x80) { /* indexed: static 8-14 are :status 200 204 206 304 400 404 500 */
        static const int cls[] = {2, 2, 2, 3, 4, 4, 5};
        unsigned i = p[0] & 0x7f;
        return i >= 8 && i <= 14 ? cls[i - 8] : 0;
    }
    /* a literal with :status's static name (index 8) and a plain three-digit value */
    unsigned name = (p[0] & 0xc0) == 0x40 ? (p[0] & 0x3fu) : (p[0] & 0xf0) == 0x00 || (p[0] & 0xf0) == 0x10 ? (p[0] & 0x0fu) : 0;
    if (name != 8 || n < 5 || p[1] != 3 || p[2] < '1' || p[2] > '5')
        return 0;
    return p[2] - '0';
}

static void complete(conn_t *c)
{
    c->in_flight--;
    done++;
}

/* Handles the whole frames in c's input; returns the bytes used. */
static size_t on_frames(conn_t *c)
{
    size_t off = 0;
    while (c->in_len - off >= 9) {
        const unsigned char *h = c->in + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        int type = h[3], flags = h[4];
        uint32_t stream = be32(h + 5) & 0x7fffffff;
        if (len > IN_CAP - 9)
            die("a frame larger than the input buffer");
        if (c->in_len - off < 9 + len)
            break;
        const unsigned char *p = h + 9;
        size_t pad = 0, skip = 0;
        if ((type == F_DATA || type == F_HEADERS) && (flags & FL_PADDED) && len > 0)
            pad = p[0], skip = 1;
        if (type == F_HEADERS && (flags & FL_PRIORITY))
            skip += 5;
        if (skip + pad > len)
            die("a padded frame shorter than its padding");
        switch (type) {
        case F_DATA:
            data_bytes += len - skip - pad;
            c->unacked += len;
            if (flags & FL_END_STREAM)
                complete(c);
            break;
        case F_HEADERS:
            header_bytes += len;
            status_class[status_of(p + skip, len - skip - pad)]++;
            if (flags & FL_END_STREAM)
                complete(c);
            break;
        case F_RST_STREAM:
            if (stream != 0) {
                status_class[0]++;
                complete(c);
            }
            break;
        case F_SETTINGS:
            if (!(flags & FL_ACK)) {
                for (size_t i = 0; i + 6 <= len; i += 6) {
                    unsigned id = (unsigned)p[i] << 8 | p[i + 1];
                    uint32_t v = be32(p + i + 2);
                    if (id == 0x3)
                        peer_max_streams = v;
                    else if (id == 0x4 && v < opt.body_len)
                        die("the server's stream window is smaller than the body");
                    else if (id == 0x1 && v < table_needed)
                        die("the server's HPACK table is smaller than the request's fields need");
                }
                frame_head(&c->out, 0, F_SETTINGS, FL_ACK, 0);
            }
            break;
        case F_PING:
            if (!(flags & FL_ACK) && len == 8) {
                frame_head(&c->out, 8, F_PING, FL_ACK, 0);
                put(&c->out, p, 8);
            }
            break;
        case F_WINDOW_UPDATE:
            if (stream == 0 && len == 4)
                c->send_window += be32(p) & 0x7fffffff;
            break;
        case F_GOAWAY:
            fprintf(stderr, "bench-h2c: GOAWAY from the server (error code %u)\n", len >= 8 ? be32(p + 4) : 0);
            exit(1);
        }
        off += 9 + len;
    }
    /* Our connection window was opened to 2^31-1: give back what was received once it is a quarter spent. */
    if (c->unacked >= RECV_WINDOW / 4) {
        window_update(&c->out, (uint32_t)c->unacked);
        c->unacked = 0;
    }
    return off;
}

static int on_readable(conn_t *c)
{
    for (;;) {
        size_t room = IN_CAP - c->in_len;
        ssize_t n = read(c->fd, c->in + c->in_len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return -1;
        total_bytes += (uint64_t)n;
        c->in_len += (size_t)n;
        size_t used = on_frames(c);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if ((size_t)n < room)
            return 0; /* a short read: nothing more waits */
    }
}

static int connect_to(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(opt.port))};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1)
        die("the host must be an IPv4 address");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("cannot connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-h2c (-n N | -D MS) [-c C] [-m M] [-H 'name: value']... [-d FILE] http://HOST:PORT/PATH\n");
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "n:D:c:m:H:d:")) != -1) {
        switch (o) {
        case 'n':
            opt.total = strtoull(optarg, NULL, 10);
            break;
        case 'D':
            opt.until_ms = atof(optarg);
            break;
        case 'c':
            opt.conns = (unsigned)atoi(optarg);
            break;
        case 'm':
            opt.streams = (unsigned)atoi(optarg);
            break;
        case 'H': {
            char *colon = strchr(optarg, ':');
            if (colon == NULL || colon == optarg || opt.nheaders == MAX_HEADERS) /* no name, or a pseudo-header */
                usage();
            *colon = '\0';
            for (char *s = optarg; *s; s++)
                if (*s >= 'A' && *s <= 'Z')
                    *s = (char)(*s - 'A' + 'a'); /* HTTP/2 field names are lower case */
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            opt.names[opt.nheaders] = optarg, opt.values[opt.nheaders++] = v;
            break;
        }
        case 'd': {
            FILE *f = fopen(optarg, "rb");
            if (f == NULL)
                die("cannot open the body file");
            opt.body_len = fread(opt.body, 1, sizeof(opt.body), f);
            if (!feof(f) || ferror(f))
                die("the body file is larger than one 16 KB DATA frame");
            fclose(f);
            break;
        }
        default:
            usage();
        }
    }
    if (optind != argc - 1 || (opt.total == 0) == (opt.until_ms <= 0) || opt.conns == 0 || opt.conns > MAX_CONNS ||
        opt.streams == 0 || strncmp(argv[optind], "http://", 7) != 0)
        usage();
    static char url[512];
    snprintf(url, sizeof(url), "%s", argv[optind] + 7);
    char *slash = strchr(url, '/'), *colon = strchr(url, ':');
    if (colon == NULL || (slash != NULL && colon > slash))
        usage();
    static char path[512] = "/";
    if (slash != NULL) {
        snprintf(path, sizeof(path), "%s", slash);
        *slash = '\0';
    }
    *colon = '\0';
    opt.host = url, opt.port = colon + 1, opt.path = path;
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    build_blocks();
    static conn_t conns[MAX_CONNS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    /* The preface, our settings (no push; streams' windows wide open), the connection's window opened to 2^31-1. */
    static const unsigned char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    static const unsigned char settings[] = {0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x7f, 0xff, 0xff, 0xff};
    for (unsigned i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        c->fd = connect_to();
        c->next_id = 1;
        c->send_window = 65535;
        if ((c->in = malloc(IN_CAP)) == NULL)
            die("out of memory");
        put(&c->out, preface, sizeof(preface) - 1);
        frame_head(&c->out, sizeof(settings), F_SETTINGS, 0, 0);
        put(&c->out, settings, sizeof(settings));
        window_update(&c->out, RECV_WINDOW - 65535);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
            die("epoll_ctl");
    }
    double cpu0 = cpu_s();
    start_ms = now_ms();
    for (unsigned i = 0; i < opt.conns; i++) {
        fill(&conns[i]);
        flush(&conns[i], ep);
    }
    struct epoll_event evs[MAX_CONNS];
    while (started > done || more_to_start()) {
        int n = epoll_wait(ep, evs, MAX_CONNS, 10000);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("no answer for 10 s");
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && on_readable(c) != 0)
                die("the server closed a connection");
            fill(c);
            flush(c, ep);
        }
    }
    double secs = (now_ms() - start_ms) / 1e3;
    double cpu = cpu_s() - cpu0;
    uint64_t ok = status_class[2] + status_class[3];
    printf("bench-h2c: %u connections, %u streams each, h2c (prior knowledge)\n", opt.conns, opt.streams);
    printf("finished in %.2fs, %.2f req/s, %.2fMB/s\n", secs, (double)done / secs, (double)total_bytes / secs / 1048576);
    printf("requests: %llu total, %llu started, %llu done, %llu succeeded, %llu failed, 0 errored, 0 timeout\n",
           (unsigned long long)(opt.total ? opt.total : started), (unsigned long long)started, (unsigned long long)done,
           (unsigned long long)ok, (unsigned long long)(done - ok));
    printf("status codes: %llu 2xx, %llu 3xx, %llu 4xx, %llu 5xx\n", (unsigned long long)status_class[2],
           (unsigned long long)status_class[3], (unsigned long long)status_class[4], (unsigned long long)status_class[5]);
    printf("traffic: %.2fMB (%llu) total, %.2fMB (%llu) headers (space savings 0.00%%), %.2fMB (%llu) data\n",
           (double)total_bytes / 1048576, (unsigned long long)total_bytes, (double)header_bytes / 1048576,
           (unsigned long long)header_bytes, (double)data_bytes / 1048576, (unsigned long long)data_bytes);
    printf("Application protocol: h2c\n");
    fprintf(stderr, "bench-h2c: %.2f us of CPU per request\n", done ? cpu * 1e6 / (double)done : 0.0);
    return 0;
}
