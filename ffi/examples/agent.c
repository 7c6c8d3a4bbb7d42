/*
 * agent.c: a C agent over imds_cache, as a log shipper or monitoring agent would use it.
 *
 *  1. One thread-safe handle (imds_cache_new) serves many identities and resources: worker
 *     pthreads warm 1000 user-assigned identities x 3 resources with the blocking call, and
 *     the library keeps IMDS's limits (20 requests/s, 5 in flight) however many threads ask.
 *  2. Several threads then hammer the warm cache for 5 s: every call is a hit, no I/O.
 *  3. An event-loop path: a sans-IO handle in memory this program owns (no allocation by the
 *     library), fetching over its own non-blocking sockets driven by poll().
 *
 * Usage: agent EMULATOR_URL   (an imds-emulator, e.g. `imds-emulator --identities 1000`; the
 * program reads the identities and the request counts from its control API). Exit status 0
 * only if every check holds.
 *
 * Build: cc -std=c99 -D_POSIX_C_SOURCE=200809L -pthread agent.c \
 *            $(pkg-config --cflags --libs imds_cache) -o agent
 * (Written in the common subset of C99 and C++11.)
 */
#include <imds_cache.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define N_RESOURCES 3
#define COLD_THREADS 8
#define HOT_THREADS 4
#define HOT_SECONDS 5
#define HIST_NS 100000 /* latency histogram: 1 ns buckets up to 100 us, then one overflow */

static const char *RESOURCES[N_RESOURCES] = {"https://management.azure.com",
                                             "https://vault.azure.net",
                                             "https://storage.azure.com"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void print_result(const char *what, imds_cache_result r) {
    uint8_t msg[256];
    size_t n = 0;
    imds_cache_result_message(r, msg, sizeof msg, &n);
    fprintf(stderr, "agent: %s: %.*s (%u)\n", what, (int)n, (const char *)msg, (unsigned)r);
}

/* A failed imds_cache_get_token, with the failure's text (the endpoint's own error included). */
static void print_failure(const char *what, imds_cache_result r) {
    uint8_t text[512];
    size_t n = 0;
    if (imds_cache_last_error(text, sizeof text, &n) != IMDS_CACHE_RESULT_OK) n = 0;
    fprintf(stderr, "agent: %s: %.*s (%u)\n", what, (int)n, (const char *)text, (unsigned)r);
}

/* ---- the emulator's control API (demo harness, not part of using the library) ---------- */

static char host[256];
static char port[8];

static int parse_url(const char *url) {
    const char *p = strstr(url, "://");
    const char *colon;
    size_t n;
    p = p ? p + 3 : url;
    colon = strrchr(p, ':');
    if (!colon || (size_t)(colon - p) >= sizeof host) return -1;
    n = (size_t)(colon - p);
    memcpy(host, p, n);
    host[n] = 0;
    n = strcspn(colon + 1, "/");
    if (n == 0 || n >= sizeof port) return -1;
    memcpy(port, colon + 1, n);
    port[n] = 0;
    return 0;
}

static int dial(int nonblocking) {
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int fd;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return -1;
    fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0 && nonblocking) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* GET path on the emulator; returns the body (malloc'd, NUL-terminated) or NULL. */
static char *control_get(const char *path) {
    char req[512];
    size_t cap = 1 << 16, len = 0;
    char *buf = (char *)malloc(cap);
    char *body;
    int fd = dial(0);
    if (fd < 0 || !buf) {
        free(buf);
        if (fd >= 0) close(fd);
        return NULL;
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    if (write(fd, req, strlen(req)) < 0) len = 0;
    for (;;) {
        ssize_t n;
        if (cap - len < 4096) {
            char *bigger = (char *)realloc(buf, cap * 2);
            if (!bigger) break;
            buf = bigger;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n <= 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    body = strstr(buf, "\r\n\r\n");
    if (!body) {
        free(buf);
        return NULL;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}

/* The number after "key": at its first occurrence (top-level fields come first). */
static long long json_number(const char *json, const char *key) {
    char pattern[64];
    const char *p;
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    p = json ? strstr(json, pattern) : NULL;
    return p ? atoll(p + strlen(pattern)) : -1;
}

/* Client ids of the user-assigned identities, from /control/identities. */
static char **user_client_ids(size_t *count) {
    char *json = control_get("/control/identities");
    char **ids = NULL;
    size_t n = 0, cap = 0;
    const char *p = json ? strstr(json, "\"identities\":[") : NULL;
    while (p && (p = strchr(p + 1, '{')) != NULL) {
        const char *end = strchr(p, '}');
        const char *kind = strstr(p, "\"kind\":\"user_assigned\"");
        const char *cid = strstr(p, "\"client_id\":\"");
        if (!end) break;
        if (kind && kind < end && cid && cid < end) {
            cid += strlen("\"client_id\":\"");
            if (n == cap) {
                char **bigger;
                cap = cap ? cap * 2 : 64;
                bigger = (char **)realloc(ids, cap * sizeof *ids);
                if (!bigger) break;
                ids = bigger;
            }
            ids[n] = (char *)calloc(1, 37);
            if (ids[n]) memcpy(ids[n], cid, 36);
            n++;
        }
        p = end;
    }
    free(json);
    *count = n;
    return ids;
}

/* ---- part 1: cold start from pthreads with the blocking call ---------------------------- */

static imds_cache *cache;
static imds_cache_identity *identities;
static size_t n_identities;
static size_t next_key;
static size_t cold_ok;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void *cold_worker(void *arg) {
    uint8_t *token = (uint8_t *)malloc(16384);
    (void)arg;
    for (;;) {
        size_t key, len = 0;
        const char *resource;
        imds_cache_result r;
        pthread_mutex_lock(&lock);
        key = next_key++;
        pthread_mutex_unlock(&lock);
        if (key >= n_identities * N_RESOURCES) break;
        resource = RESOURCES[key % N_RESOURCES];
        r = imds_cache_get_token(cache, &identities[key / N_RESOURCES], (const uint8_t *)resource,
                                 strlen(resource), token, 16384, &len, NULL);
        if (r == IMDS_CACHE_RESULT_OK) {
            pthread_mutex_lock(&lock);
            cold_ok++;
            if (cold_ok % 500 == 0) printf("  %zu tokens...\n", cold_ok);
            pthread_mutex_unlock(&lock);
        } else {
            print_failure("cold start", r);
        }
        memset(token, 0, len); /* the copy is ours to wipe (D13) */
    }
    free(token);
    return NULL;
}

/* ---- part 2: the warm cache hammered from several threads ------------------------------- */

struct hot {
    uint64_t calls;
    uint64_t failures;
    uint32_t *hist; /* HIST_NS + 1 buckets */
    uint64_t seed;
};

static volatile int hot_stop;

static void *hot_worker(void *arg) {
    struct hot *h = (struct hot *)arg;
    uint8_t token[16384];
    while (!hot_stop) {
        size_t key, len = 0;
        uint64_t t0, dt;
        const char *resource;
        imds_cache_result r;
        /* xorshift: a random key each call */
        h->seed ^= h->seed << 13;
        h->seed ^= h->seed >> 7;
        h->seed ^= h->seed << 17;
        key = (size_t)(h->seed % (n_identities * N_RESOURCES));
        resource = RESOURCES[key % N_RESOURCES];
        t0 = now_ns();
        r = imds_cache_get_token(cache, &identities[key / N_RESOURCES], (const uint8_t *)resource,
                                 strlen(resource), token, sizeof token, &len, NULL);
        dt = now_ns() - t0;
        h->hist[dt < HIST_NS ? dt : HIST_NS]++;
        h->calls++;
        if (r != IMDS_CACHE_RESULT_OK) h->failures++;
    }
    memset(token, 0, sizeof token);
    return NULL;
}

static double percentile(const uint64_t *hist, uint64_t total, double q) {
    uint64_t want = (uint64_t)((double)total * q), seen = 0;
    size_t i;
    for (i = 0; i <= HIST_NS; i++) {
        seen += hist[i];
        if (seen > want) return (double)i / 1000.0;
    }
    return (double)HIST_NS / 1000.0;
}

/* ---- part 3: an event loop over the sans-IO handle -------------------------------------- */

struct conn {
    int fd;
    uint64_t ticket;
    uint8_t req[8192];
    size_t req_len, sent;
    uint8_t resp[65536];
    size_t resp_len;
    int done;
};

/* Fetches the system identity's token for each resource through the sans-IO handle, all at
 * once, each over its own non-blocking socket, driven by poll(). Returns the tokens fetched. */
static int event_loop(void) {
    size_t size = 0, i;
    void *mem;
    imds_cache_sansio *h = NULL;
    imds_cache_config *config = NULL;
    imds_cache_identity system_identity;
    struct conn conns[N_RESOURCES];
    struct pollfd fds[N_RESOURCES];
    uint8_t token[16384];
    int tokens = 0, hits = 0, pending = N_RESOURCES;
    double deadline = now_s() + 30;
    char url[300];
    imds_cache_result r;

    snprintf(url, sizeof url, "http://%s:%s", host, port);
    imds_cache_config_new(&config);
    imds_cache_config_set_capacity(config, 16);
    imds_cache_config_set_endpoint(config, IMDS_CACHE_FLAVOUR_IMDS, (const uint8_t *)url,
                                   strlen(url), NULL, 0);
    imds_cache_sansio_storage_size(config, &size);
    mem = malloc(size); /* malloc's alignment covers IMDS_CACHE_STORAGE_ALIGN */
    r = imds_cache_sansio_init(mem, size, config, &h);
    imds_cache_config_free(config);
    if (r != IMDS_CACHE_RESULT_OK) {
        print_result("imds_cache_sansio_init", r);
        free(mem);
        return 0;
    }
    imds_cache_identity_system(&system_identity);
    memset(conns, 0, sizeof conns);
    for (i = 0; i < N_RESOURCES; i++) conns[i].fd = -1;

    while (pending > 0 && now_s() < deadline) {
        nfds_t nfds = 0;
        int timeout_ms = 50;
        /* Start the fetches that have no connection yet. */
        for (i = 0; i < N_RESOURCES; i++) {
            struct conn *c = &conns[i];
            imds_cache_lookup_answer a;
            imds_cache_request_info info;
            size_t n = 0;
            if (c->done || c->fd >= 0) continue;
            r = imds_cache_sansio_lookup(h, &system_identity, (const uint8_t *)RESOURCES[i],
                                         strlen(RESOURCES[i]), imds_cache_now_ms(), token, sizeof token,
                                         &n, &a);
            if (r != IMDS_CACHE_RESULT_OK) {
                print_result("imds_cache_sansio_lookup", r);
                c->done = 1;
                pending--;
                continue;
            }
            if (a.kind == IMDS_CACHE_LOOKUP_KIND_HIT) { /* fetched by an earlier turn */
                c->done = 1;
                pending--;
                continue;
            }
            if (a.kind != IMDS_CACHE_LOOKUP_KIND_FETCH) continue; /* wait: throttled, pending */
            c->ticket = a.ticket;
            r = imds_cache_sansio_request(h, a.ticket, imds_cache_now_ms(), c->req, sizeof c->req,
                                          &c->req_len, &info);
            if (r != IMDS_CACHE_RESULT_OK) {
                print_result("imds_cache_sansio_request", r);
                imds_cache_sansio_cancel(h, a.ticket);
                c->done = 1;
                pending--;
                continue;
            }
            c->fd = dial(1); /* non-blocking connect to info.host:info.port */
            c->sent = c->resp_len = 0;
            if (c->fd < 0) {
                imds_cache_outcome out;
                imds_cache_sansio_fail(h, a.ticket, IMDS_CACHE_TRANSPORT_REFUSED, imds_cache_now_ms(), &out);
            }
        }
        /* Wait for the sockets. */
        for (i = 0; i < N_RESOURCES; i++) {
            if (conns[i].fd < 0) continue;
            fds[nfds].fd = conns[i].fd;
            fds[nfds].events = conns[i].sent < conns[i].req_len ? POLLOUT : POLLIN;
            fds[nfds].revents = 0;
            nfds++;
        }
        if (poll(fds, nfds, timeout_ms) < 0 && errno != EINTR) break;
        /* Move each ready socket on. */
        for (i = 0; i < N_RESOURCES; i++) {
            struct conn *c = &conns[i];
            imds_cache_outcome out;
            ssize_t n;
            nfds_t j;
            short ready = 0;
            if (c->fd < 0) continue;
            for (j = 0; j < nfds; j++)
                if (fds[j].fd == c->fd) ready = fds[j].revents;
            if (!ready) continue;
            if (c->sent < c->req_len) {
                n = write(c->fd, c->req + c->sent, c->req_len - c->sent);
                if (n > 0) c->sent += (size_t)n;
                else if (errno != EAGAIN) {
                    imds_cache_sansio_fail(h, c->ticket, IMDS_CACHE_TRANSPORT_RESET, imds_cache_now_ms(), &out);
                    close(c->fd);
                    c->fd = -1;
                }
                continue;
            }
            n = read(c->fd, c->resp + c->resp_len, sizeof c->resp - c->resp_len);
            if (n < 0 && errno == EAGAIN) continue;
            if (n > 0) {
                /* Feed every byte received so far; the core re-parses from the start. */
                c->resp_len += (size_t)n;
                r = imds_cache_sansio_feed(h, c->ticket, c->resp, c->resp_len, imds_cache_now_ms(), &out);
            } else {
                r = imds_cache_sansio_eof(h, c->ticket, c->resp, c->resp_len, imds_cache_now_ms(), &out);
            }
            if (r != IMDS_CACHE_RESULT_OK) print_result("imds_cache_sansio_feed", r);
            if (r == IMDS_CACHE_RESULT_OK && out.kind == IMDS_CACHE_OUTCOME_KIND_NEED_MORE) continue;
            close(c->fd);
            c->fd = -1;
            if (r == IMDS_CACHE_RESULT_OK && out.kind == IMDS_CACHE_OUTCOME_KIND_TOKEN) {
                tokens++;
                c->done = 1;
                pending--;
            } else if (r != IMDS_CACHE_RESULT_OK || out.kind == IMDS_CACHE_OUTCOME_KIND_FAILED) {
                c->done = 1; /* terminal: give up on this key */
                pending--;
            } /* RETRY: the next turn's lookup hands out a new ticket after the backoff */
        }
    }
    /* Every key is a hit now, answered from the caller's memory. */
    for (i = 0; i < N_RESOURCES; i++) {
        imds_cache_lookup_answer a;
        size_t n = 0;
        if (imds_cache_sansio_lookup(h, &system_identity, (const uint8_t *)RESOURCES[i],
                                     strlen(RESOURCES[i]), imds_cache_now_ms(), token, sizeof token, &n,
                                     &a) == IMDS_CACHE_RESULT_OK &&
            a.kind == IMDS_CACHE_LOOKUP_KIND_HIT)
            hits++;
    }
    for (i = 0; i < N_RESOURCES; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    memset(token, 0, sizeof token);
    imds_cache_sansio_deinit(h); /* wipes the tokens */
    free(mem);
    printf("  event loop     %d tokens fetched, then %d hits (sans-IO handle in %zu bytes of our "
           "memory, poll() on non-blocking sockets)\n",
           tokens, hits, size);
    return tokens == N_RESOURCES && hits == N_RESOURCES;
}

int main(int argc, char **argv) {
    imds_cache_config *config = NULL;
    char **client_ids;
    size_t i;
    pthread_t threads[COLD_THREADS > HOT_THREADS ? COLD_THREADS : HOT_THREADS];
    struct hot hot[HOT_THREADS];
    uint64_t *hist;
    uint64_t calls = 0, hot_failures = 0;
    imds_cache_stats before, after;
    double t0, cold_s, hot_s, hit_rate;
    long long cold_requests, sent_429;
    char *stats;
    int ok = 1, loop_ok;
    imds_cache_result r;
    uint8_t version[32];
    size_t version_len = 0;
    /* The budget: IMDS's own by default; `make demo` passes the raised, shared one. */
    uint32_t rate = 20, window_ms = 1000, in_flight = 5;
    const char *url = getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    int a;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (a = 1; a < argc; a++) {
        if (a + 1 < argc && strcmp(argv[a], "--rate") == 0) {
            rate = (uint32_t)strtoul(argv[++a], NULL, 10);
        } else if (a + 1 < argc && strcmp(argv[a], "--window") == 0) {
            window_ms = (uint32_t)strtoul(argv[++a], NULL, 10);
        } else if (a + 1 < argc && strcmp(argv[a], "--in-flight") == 0) {
            in_flight = (uint32_t)strtoul(argv[++a], NULL, 10);
        } else {
            url = argv[a];
        }
    }
    if (url == NULL || parse_url(url) != 0) {
        fprintf(stderr,
                "usage: %s [EMULATOR_URL] [--rate N --window MS --in-flight N]\n"
                "  (or AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:PORT)\n",
                argv[0]);
        return 2;
    }
    client_ids = user_client_ids(&n_identities);
    if (n_identities == 0) {
        fprintf(stderr, "agent: no user-assigned identities at %s\n", url);
        return 1;
    }
    identities = (imds_cache_identity *)calloc(n_identities, sizeof *identities);
    for (i = 0; i < n_identities; i++) {
        r = imds_cache_identity_client_id((const uint8_t *)client_ids[i], strlen(client_ids[i]),
                                          &identities[i]);
        if (r != IMDS_CACHE_RESULT_OK) {
            print_result("client id", r);
            return 1;
        }
    }

    /* One handle for everything: the defaults hold 4096 entries; the budget is IMDS's. */
    imds_cache_config_new(&config);
    imds_cache_config_set_endpoint(config, IMDS_CACHE_FLAVOUR_IMDS, (const uint8_t *)url,
                                   strlen(url), NULL, 0);
    r = imds_cache_config_set_budget(config, rate, window_ms, in_flight);
    if (r != IMDS_CACHE_RESULT_OK) {
        print_result("budget", r);
        return 2;
    }
    r = imds_cache_new(config, &cache);
    imds_cache_config_free(config);
    if (r != IMDS_CACHE_RESULT_OK) {
        print_result("imds_cache_new", r);
        return 1;
    }
    imds_cache_version(version, sizeof version, &version_len);
    printf("c agent (imds_cache %.*s): %zu identities \xc3\x97 %d resources = %zu keys; budget %u "
           "requests per %u ms, %u in flight\n",
           (int)version_len, (const char *)version, n_identities, N_RESOURCES,
           n_identities * N_RESOURCES, (unsigned)rate, (unsigned)window_ms, (unsigned)in_flight);

    /* 1. Cold start. */
    t0 = now_s();
    for (i = 0; i < COLD_THREADS; i++) pthread_create(&threads[i], NULL, cold_worker, NULL);
    for (i = 0; i < COLD_THREADS; i++) pthread_join(threads[i], NULL);
    cold_s = now_s() - t0;
    stats = control_get("/control/stats");
    cold_requests = json_number(stats, "requests");
    free(stats);
    printf("  cold start     %lld requests seen by the emulator for %zu keys in %.2f s (%zu tokens)\n",
           cold_requests, n_identities * N_RESOURCES, cold_s, cold_ok);
    ok = ok && cold_ok == n_identities * N_RESOURCES &&
         cold_requests == (long long)(n_identities * N_RESOURCES);

    /* 2. The warm cache, hammered. */
    imds_cache_get_stats(cache, &before);
    hot_stop = 0;
    for (i = 0; i < HOT_THREADS; i++) {
        hot[i].calls = hot[i].failures = 0;
        hot[i].hist = (uint32_t *)calloc(HIST_NS + 1, sizeof(uint32_t));
        hot[i].seed = 0x9E3779B97F4A7C15ULL + i;
        pthread_create(&threads[i], NULL, hot_worker, &hot[i]);
    }
    t0 = now_s();
    sleep(HOT_SECONDS);
    hot_stop = 1;
    for (i = 0; i < HOT_THREADS; i++) pthread_join(threads[i], NULL);
    hot_s = now_s() - t0;
    imds_cache_get_stats(cache, &after);
    hist = (uint64_t *)calloc(HIST_NS + 1, sizeof(uint64_t));
    for (i = 0; i < HOT_THREADS; i++) {
        size_t b;
        for (b = 0; b <= HIST_NS; b++) hist[b] += hot[i].hist[b];
        calls += hot[i].calls;
        hot_failures += hot[i].failures;
        free(hot[i].hist);
    }
    hit_rate = 100.0 * (double)(after.hits - before.hits) /
               (double)((after.hits - before.hits) + (after.misses - before.misses));
    printf("  hot phase      %llu calls in %.1f s on %d threads (%.1f M calls/s); p50 %.0f ns, p99 "
           "%.0f ns; hit rate %.4f\n",
           (unsigned long long)calls, hot_s, HOT_THREADS, (double)calls / hot_s / 1e6,
           1000.0 * percentile(hist, calls, 0.50), 1000.0 * percentile(hist, calls, 0.99),
           hit_rate / 100.0);
    free(hist);
    ok = ok && hot_failures == 0 && after.misses == before.misses && calls > 0;

    /* 3. The event-loop path. */
    loop_ok = event_loop();
    ok = ok && loop_ok;

    stats = control_get("/control/stats");
    sent_429 = json_number(stats, "sent_429");
    printf("  throttling     %lld responses 429; %llu lookups held back by the client's budget\n",
           sent_429, (unsigned long long)(after.throttled - before.throttled));
    free(stats);
    ok = ok && sent_429 == 0;

    imds_cache_free(cache);
    for (i = 0; i < n_identities; i++) free(client_ids[i]);
    free(client_ids);
    free(identities);
    printf("  [%s] every check\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
