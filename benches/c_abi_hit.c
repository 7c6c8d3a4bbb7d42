/*
 * c_abi_hit.c: the C ABI hit of BENCHMARKS.md. Times `imds_cache_get_token` on a warm full
 * handle (imds_cache_config_new + imds_cache_config_set_endpoint + imds_cache_new), from C, in
 * the shapes of the Rust driver bench (benches/benches/driver_hit.rs): 1,000 user-assigned
 * identities x 3 resources warm, 1,900-byte tokens, 1 and 2 threads, one key ("same key") or
 * a pre-generated uniform random sequence over the 3,000 keys per thread ("different keys").
 *
 * Each variant: one warm-up run, then RUNS runs of ITERS calls per thread; a run's time per
 * call is its wall time (the slower thread's with 2 threads) / ITERS; the median of the runs is
 * reported. Every call must be a hit (the handle's miss counter is checked).
 *
 * Usage: c_abi_hit EMULATOR_URL [--runs N] [--iters N]
 *   EMULATOR_URL: `imds-emulator --identities 1000 --token-size 1900 --throttle off`.
 * Prints a line per variant, then one JSON object on the last line:
 *   {"ns_per_call": <1 thread, same key>, "same_key_1_threads": ..., ...}
 * benches/c_abi_hit.sh builds it, starts the emulator and writes that line to
 * target/bench/c_abi_hit.json.
 */
#include <imds_cache.h>

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define N_RESOURCES 3
#define SEQUENCE (1u << 16) /* as the Rust bench: 65,536 keys per thread, walked in a loop */
#define MAX_RUNS 101
#define MAX_THREADS 2
#define TOKEN_BUF 16384

static const char *RESOURCES[N_RESOURCES] = {"https://management.azure.com",
                                             "https://vault.azure.net",
                                             "https://storage.azure.com"};
static size_t resource_len[N_RESOURCES];

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die_result(const char *what, imds_cache_result r) {
    uint8_t msg[256];
    size_t n = 0;
    imds_cache_result_message(r, msg, sizeof msg, &n);
    fprintf(stderr, "c_abi_hit: %s: %.*s (%u)\n", what, (int)n, (const char *)msg, (unsigned)r);
    exit(1);
}

/* ---- the emulator's control API: the client ids of its user-assigned identities -------- */

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

/* GET path; returns the body (malloc'd, NUL-terminated) or NULL. */
static char *control_get(const char *path) {
    struct addrinfo hints, *res = NULL;
    char req[512];
    size_t cap = 1 << 16, len = 0;
    char *buf, *body;
    int fd;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0) return NULL;
    fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) return NULL;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
             host);
    if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
        close(fd);
        return NULL;
    }
    buf = (char *)malloc(cap);
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
                cap = cap ? cap * 2 : 1024;
                ids = (char **)realloc(ids, cap * sizeof *ids);
            }
            ids[n] = (char *)calloc(1, 37);
            memcpy(ids[n], cid, 36);
            n++;
        }
        p = end;
    }
    free(json);
    *count = n;
    return ids;
}

/* ---- the timed loop --------------------------------------------------------------------- */

static imds_cache *cache;
static imds_cache_identity *identities;
static size_t n_keys;
static uint32_t *sequences[MAX_THREADS];

struct worker {
    pthread_barrier_t *barrier;
    const uint32_t *seq; /* NULL: always key 0 */
    uint64_t iters;
    uint64_t elapsed_ns;
    uint64_t failures;
};

static void *worker_run(void *arg) {
    struct worker *w = (struct worker *)arg;
    uint8_t *token = (uint8_t *)malloc(TOKEN_BUF);
    uint64_t i, t0, failures = 0;
    if (w->barrier) pthread_barrier_wait(w->barrier);
    t0 = now_ns();
    for (i = 0; i < w->iters; i++) {
        size_t k = w->seq ? w->seq[i & (SEQUENCE - 1)] : 0, len = 0;
        imds_cache_result r =
            imds_cache_get_token(cache, &identities[k / N_RESOURCES],
                                 (const uint8_t *)RESOURCES[k % N_RESOURCES],
                                 resource_len[k % N_RESOURCES], token, TOKEN_BUF, &len, NULL);
        failures += r != IMDS_CACHE_RESULT_OK;
        /* Keep the copy observable so the compiler cannot drop anything. */
        __asm__ __volatile__("" : : "r"(token), "r"(len) : "memory");
    }
    w->elapsed_ns = now_ns() - t0;
    w->failures = failures;
    memset(token, 0, TOKEN_BUF); /* the copy is ours to wipe (D13) */
    free(token);
    return NULL;
}

/* One run: per-call ns (the slower thread's wall time / iters). */
static double run_once(int threads, int different_keys, uint64_t iters) {
    struct worker w[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    pthread_barrier_t barrier;
    uint64_t slowest = 0;
    int t;
    if (threads > 1) pthread_barrier_init(&barrier, NULL, (unsigned)threads);
    for (t = 0; t < threads; t++) {
        w[t].barrier = threads > 1 ? &barrier : NULL;
        w[t].seq = different_keys ? sequences[t] : NULL;
        w[t].iters = iters;
        w[t].elapsed_ns = 0;
        w[t].failures = 0;
    }
    if (threads == 1) {
        worker_run(&w[0]);
    } else {
        for (t = 0; t < threads; t++) pthread_create(&tid[t], NULL, worker_run, &w[t]);
        for (t = 0; t < threads; t++) pthread_join(tid[t], NULL);
        pthread_barrier_destroy(&barrier);
    }
    for (t = 0; t < threads; t++) {
        if (w[t].failures) {
            fprintf(stderr, "c_abi_hit: %llu calls failed\n", (unsigned long long)w[t].failures);
            exit(1);
        }
        if (w[t].elapsed_ns > slowest) slowest = w[t].elapsed_ns;
    }
    return (double)slowest / (double)iters;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double measure(int threads, int different_keys, int runs, uint64_t iters) {
    double t[MAX_RUNS];
    int i;
    run_once(threads, different_keys, iters / 4 + 1); /* warm-up */
    for (i = 0; i < runs; i++) t[i] = run_once(threads, different_keys, iters);
    qsort(t, (size_t)runs, sizeof t[0], cmp_double);
    printf("  %-14s %d thread%s: median %7.1f ns per call (min %.1f, max %.1f; %d runs x %llu "
           "calls%s)\n",
           different_keys ? "different keys" : "same key", threads, threads > 1 ? "s" : " ",
           t[runs / 2], t[0], t[runs - 1], runs, (unsigned long long)iters,
           threads > 1 ? " per thread" : "");
    return t[runs / 2];
}

int main(int argc, char **argv) {
    const char *url = NULL;
    int runs = 11, a, t;
    uint64_t iters = 200000;
    char **client_ids;
    size_t n_ids, i;
    imds_cache_config *config = NULL;
    imds_cache_str res[N_RESOURCES];
    imds_cache_prefetch_report report;
    imds_cache_stats before, after;
    imds_cache_result r;
    double v[4];
    uint64_t seed;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (a = 1; a < argc; a++) {
        if (a + 1 < argc && strcmp(argv[a], "--runs") == 0) {
            runs = atoi(argv[++a]);
        } else if (a + 1 < argc && strcmp(argv[a], "--iters") == 0) {
            iters = strtoull(argv[++a], NULL, 10);
        } else {
            url = argv[a];
        }
    }
    if (!url || parse_url(url) != 0 || runs < 1 || runs > MAX_RUNS || iters == 0) {
        fprintf(stderr, "usage: %s EMULATOR_URL [--runs 1..%d] [--iters N]\n", argv[0], MAX_RUNS);
        return 2;
    }
    for (i = 0; i < N_RESOURCES; i++) resource_len[i] = strlen(RESOURCES[i]);

    client_ids = user_client_ids(&n_ids);
    if (n_ids == 0) {
        fprintf(stderr, "c_abi_hit: no user-assigned identities at %s\n", url);
        return 1;
    }
    identities = (imds_cache_identity *)calloc(n_ids, sizeof *identities);
    for (i = 0; i < n_ids; i++) {
        r = imds_cache_identity_client_id((const uint8_t *)client_ids[i], strlen(client_ids[i]),
                                          &identities[i]);
        if (r != IMDS_CACHE_RESULT_OK) die_result("client id", r);
    }
    n_keys = n_ids * N_RESOURCES;

    /* The full handle, as the Rust bench's client: default capacity (4,096 entries), the
     * budget raised to 128 per 100 ms and 16 in flight for a quick warm-up. */
    if ((r = imds_cache_config_new(&config)) != IMDS_CACHE_RESULT_OK) die_result("config", r);
    r = imds_cache_config_set_endpoint(config, IMDS_CACHE_FLAVOUR_IMDS, (const uint8_t *)url,
                                       strlen(url), NULL, 0);
    if (r != IMDS_CACHE_RESULT_OK) die_result("endpoint", r);
    if ((r = imds_cache_config_set_budget(config, 128, 100, 16)) != IMDS_CACHE_RESULT_OK)
        die_result("budget", r);
    r = imds_cache_new(config, &cache);
    imds_cache_config_free(config);
    if (r != IMDS_CACHE_RESULT_OK) die_result("imds_cache_new", r);

    for (i = 0; i < N_RESOURCES; i++) {
        res[i].ptr = (const uint8_t *)RESOURCES[i];
        res[i].len = resource_len[i];
    }
    r = imds_cache_prefetch(cache, identities, n_ids, res, N_RESOURCES, 120000, &report);
    if (r != IMDS_CACHE_RESULT_OK) die_result("prefetch", r);
    if (report.ok != n_keys) {
        fprintf(stderr, "c_abi_hit: warm-up: %zu of %zu keys\n", report.ok, n_keys);
        die_result("prefetch (first error)", report.first_error);
    }

    /* Per-thread uniform random key sequences (xorshift64, fixed seeds). */
    for (t = 0; t < MAX_THREADS; t++) {
        sequences[t] = (uint32_t *)malloc(SEQUENCE * sizeof(uint32_t));
        seed = (77u + (uint64_t)t) ^ 0x9e3779b97f4a7c15ULL;
        seed |= 1;
        for (i = 0; i < SEQUENCE; i++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            sequences[t][i] = (uint32_t)(seed % n_keys);
        }
    }

    printf("C ABI hit: imds_cache_get_token on a warm full handle, %zu keys (%zu identities x %d "
           "resources)\n",
           n_keys, n_ids, N_RESOURCES);
    imds_cache_get_stats(cache, &before);
    v[0] = measure(1, 0, runs, iters);
    v[1] = measure(1, 1, runs, iters);
    v[2] = measure(2, 0, runs, iters);
    v[3] = measure(2, 1, runs, iters);
    imds_cache_get_stats(cache, &after);
    if (after.misses != before.misses) {
        fprintf(stderr, "c_abi_hit: %llu misses while timing (want 0)\n",
                (unsigned long long)(after.misses - before.misses));
        return 1;
    }

    printf("{\"ns_per_call\": %.1f, \"same_key_1_threads\": %.1f, \"different_keys_1_threads\": "
           "%.1f, \"same_key_2_threads\": %.1f, \"different_keys_2_threads\": %.1f, \"runs\": %d, "
           "\"iters\": %llu}\n",
           v[0], v[0], v[1], v[2], v[3], runs, (unsigned long long)iters);

    imds_cache_free(cache);
    for (t = 0; t < MAX_THREADS; t++) free(sequences[t]);
    for (i = 0; i < n_ids; i++) free(client_ids[i]);
    free(client_ids);
    free(identities);
    return 0;
}
