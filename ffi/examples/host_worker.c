/*
 * host_worker.c: a worker of the host-sharing tests (tests/host/run.py): pthreads of one
 * process ask the emulator's identities for tokens through one blocking handle, whose table
 * and request budget are the process's own (--share process) or the host's (--share host).
 *
 * The same CLI and output as client/examples/host_worker.rs and
 * python/examples/host_worker.py:
 *
 *   host_worker --share host|process --dir PATH --client-ids A,B,C --resources R1,R2
 *               [--threads N (4)] [--mode warm|loop (warm)] [--seconds S (10)]
 *               [--deadline-s D (90)] [--pause-ms P (warm 0, loop 2)] [--seed X (pid)]
 *               [--start-at UNIX_MS] [--endpoint env|explicit (env)]
 *
 * The endpoint is AZURE_POD_IDENTITY_AUTHORITY_HOST, which must be a loopback URL
 * (http://127.0.0.1:PORT, the emulator): the worker refuses to start otherwise (and when a
 * variable of another endpoint kind, IDENTITY_ENDPOINT, MSI_ENDPOINT, ..., is set), so it
 * never asks the real IMDS address. --endpoint env (the default) detects it from the
 * environment as an application on a VM does (imds_cache_config_set_endpoint_from_env) and
 * checks the handle's flavour is IMDS; --endpoint explicit sets that URL as an explicit IMDS
 * endpoint (imds_cache_config_set_endpoint). --dir is exported as IMDS_CACHE_DIR (where the
 * C library looks for the host's files; a 0700 directory of this user) before the handle is
 * made. --deadline-s is each call's deadline (imds_cache_config_set_timeouts_ms). --start-at
 * waits until that wall-clock time (Unix milliseconds) before the threads start, so that
 * several processes start at once. warm: every thread asks every (client id, resource) pair
 * once, in its own seeded order, the threads released together. loop: every thread asks
 * random pairs for --seconds, sleeping --pause-ms between calls.
 *
 * Output on stdout, one line per call, written whole and flushed (a killed worker's lines so
 * far are whole):
 *
 *   CALL <client_id> <resource> <fnv1a64 of the token's bytes, 16 hex digits> <elapsed_ms>
 *   ERR <client_id> <resource> <elapsed_ms> <error text, one line, never a token or a secret>
 *   DONE <calls> <errors>
 *
 * elapsed_ms is a decimal number of milliseconds with three fraction digits. A token is never
 * printed. Exit status 0 when every call succeeded, 1 when some failed, 2 on bad usage.
 *
 * Build (mk/host.mk, `make c-host-worker`):
 *   cc -std=c99 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror -O2 -pthread \
 *      -Iinclude ffi/examples/host_worker.c target/release/libimds_cache_ffi.a -lpthread ... \
 *      -o target/c/host_worker
 */
#include <imds_cache.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 256
#define TOKEN_CAP 16384

static imds_cache *cache;
static char *client_ids[MAX_LIST];
static char *resources[MAX_LIST];
static size_t n_ids, n_res;
static imds_cache_identity identities[MAX_LIST];
static size_t n_threads = 4;
static int warm = 1;
static double seconds = 10.0;
static double deadline_s = 90.0;
static long pause_ms = -1;
static uint64_t seed;
static int explicit_endpoint;
static const char *OTHER_ENDPOINTS[] = {"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT",
                                        "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE"};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static size_t gate_waiting;
static int gate_open;
static uint64_t total_calls, total_errors;
static double loop_end;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void usage(const char *why) {
    fprintf(stderr, "host_worker: %s\n", why);
    fprintf(stderr, "usage: host_worker --share host|process --dir PATH --client-ids A,B --resources R1,R2 "
                    "[--threads N] [--mode warm|loop] [--seconds S] [--deadline-s D] [--pause-ms P] "
                    "[--seed X] [--start-at UNIX_MS] [--endpoint env|explicit]\n");
    exit(2);
}

/* Splits a comma-separated list (in place) into out[]. */
static size_t split(char *s, char **out) {
    size_t n = 0;
    char *p = s;
    while (*p && n < MAX_LIST) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (*p) out[n++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    return n;
}

static double number(const char *flag, const char *v) {
    char *end = NULL;
    double d = strtod(v, &end);
    if (!end || *end || d < 0) {
        fprintf(stderr, "host_worker: %s: not a number: %s\n", flag, v);
        exit(2);
    }
    return d;
}

/* Writes one line whole, then flushes; a closed pipe ends the worker. */
static void emit(const char *line) {
    pthread_mutex_lock(&out_lock);
    if (fputs(line, stdout) == EOF || fflush(stdout) != 0) exit(3);
    pthread_mutex_unlock(&out_lock);
}

static void *worker(void *arg) {
    size_t t = (size_t)arg, keys = n_ids * n_res, i = 0, j;
    uint64_t rng = ((seed ^ 0x9E3779B97F4A7C15ULL) * (uint64_t)(t + 1)) | 1;
    size_t *order = (size_t *)malloc(keys * sizeof *order);
    uint8_t *token = (uint8_t *)malloc(TOKEN_CAP);
    uint8_t text[1024];
    char line[2048];
    uint64_t calls = 0, errors = 0;
    if (!order || !token) {
        fprintf(stderr, "host_worker: out of memory\n");
        exit(1);
    }
    for (j = 0; j < keys; j++) order[j] = j;
    for (j = keys; j > 1; j--) { /* Fisher-Yates: this thread's own order */
        size_t k = (size_t)(next_rand(&rng) % (uint64_t)j), tmp = order[j - 1];
        order[j - 1] = order[k];
        order[k] = tmp;
    }
    /* The gate: every thread released at once. */
    pthread_mutex_lock(&gate_lock);
    gate_waiting++;
    if (gate_waiting == n_threads) {
        gate_open = 1;
        loop_end = now_s() + seconds;
        pthread_cond_broadcast(&gate_cond);
    }
    while (!gate_open) pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);

    for (;;) {
        size_t key, len = 0, text_len = 0, c;
        const char *resource;
        double t0, ms;
        imds_cache_result r;
        if (warm) {
            if (i == keys) break;
            key = order[i++];
        } else {
            if (now_s() >= loop_end) break;
            key = (size_t)(next_rand(&rng) % (uint64_t)keys);
        }
        resource = resources[key % n_res];
        t0 = now_s();
        r = imds_cache_get_token(cache, &identities[key / n_res], (const uint8_t *)resource,
                                 strlen(resource), token, TOKEN_CAP, &len, NULL);
        ms = (now_s() - t0) * 1000.0;
        calls++;
        if (r == IMDS_CACHE_RESULT_OK) {
            snprintf(line, sizeof line, "CALL %s %s %016llx %.3f\n", client_ids[key / n_res], resource,
                     (unsigned long long)fnv1a64(token, len), ms);
            memset(token, 0, len); /* the copy is ours to wipe (D13) */
        } else {
            errors++;
            if (imds_cache_last_error(text, sizeof text, &text_len) != IMDS_CACHE_RESULT_OK) text_len = 0;
            if (text_len == 0) imds_cache_result_message(r, text, sizeof text, &text_len);
            for (c = 0; c < text_len; c++)
                if (text[c] == '\n' || text[c] == '\r') text[c] = ' ';
            snprintf(line, sizeof line, "ERR %s %s %.3f %.*s (result %u)\n", client_ids[key / n_res],
                     resource, ms, (int)text_len, (const char *)text, (unsigned)r);
        }
        emit(line);
        if (pause_ms > 0) {
            struct timespec ts;
            ts.tv_sec = pause_ms / 1000;
            ts.tv_nsec = (pause_ms % 1000) * 1000000L;
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_lock(&out_lock);
    total_calls += calls;
    total_errors += errors;
    pthread_mutex_unlock(&out_lock);
    free(order);
    free(token);
    return NULL;
}

int main(int argc, char **argv) {
    const char *share = NULL, *dir = NULL, *url = getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    double start_at_ms = -1;
    imds_cache_config *config = NULL;
    pthread_t threads[MAX_LIST];
    imds_cache_result r;
    uint32_t share_value;
    char line[128];
    size_t i;
    int a;

    seed = (uint64_t)getpid();
    for (a = 1; a < argc; a++) {
        const char *flag = argv[a], *v;
        if (a + 1 >= argc) usage("every flag needs a value");
        v = argv[++a];
        if (strcmp(flag, "--share") == 0) share = v;
        else if (strcmp(flag, "--dir") == 0) dir = v;
        else if (strcmp(flag, "--client-ids") == 0) n_ids = split(argv[a], client_ids);
        else if (strcmp(flag, "--resources") == 0) n_res = split(argv[a], resources);
        else if (strcmp(flag, "--threads") == 0) n_threads = (size_t)number(flag, v);
        else if (strcmp(flag, "--mode") == 0) {
            if (strcmp(v, "warm") == 0) warm = 1;
            else if (strcmp(v, "loop") == 0) warm = 0;
            else usage("--mode: warm or loop");
        } else if (strcmp(flag, "--seconds") == 0) seconds = number(flag, v);
        else if (strcmp(flag, "--deadline-s") == 0) deadline_s = number(flag, v);
        else if (strcmp(flag, "--pause-ms") == 0) pause_ms = (long)number(flag, v);
        else if (strcmp(flag, "--seed") == 0) seed = (uint64_t)number(flag, v);
        else if (strcmp(flag, "--start-at") == 0) start_at_ms = number(flag, v);
        else if (strcmp(flag, "--endpoint") == 0) {
            if (strcmp(v, "env") == 0) explicit_endpoint = 0;
            else if (strcmp(v, "explicit") == 0) explicit_endpoint = 1;
            else usage("--endpoint: env or explicit");
        }
        else usage("unknown flag");
    }
    if (n_threads < 1) n_threads = 1;
    if (n_threads > MAX_LIST) n_threads = MAX_LIST;
    if (pause_ms < 0) pause_ms = warm ? 0 : 2;
    if (n_ids == 0 || n_res == 0) usage("--client-ids and --resources are required");
    if (!share || (strcmp(share, "host") != 0 && strcmp(share, "process") != 0))
        usage("--share host|process is required");
    share_value = strcmp(share, "host") == 0 ? IMDS_CACHE_SHARE_HOST : IMDS_CACHE_SHARE_PROCESS;
    if (share_value == IMDS_CACHE_SHARE_HOST && (!dir || !*dir)) usage("--share host needs --dir");
    if (deadline_s <= 0) usage("--deadline-s must be > 0");
    if (!url || (strncmp(url, "http://127.0.0.1:", 17) != 0 && strncmp(url, "http://localhost:", 17) != 0))
        usage("AZURE_POD_IDENTITY_AUTHORITY_HOST must be the emulator's http://127.0.0.1:PORT");
    for (i = 0; i < sizeof OTHER_ENDPOINTS / sizeof OTHER_ENDPOINTS[0]; i++)
        if (getenv(OTHER_ENDPOINTS[i])) usage("a variable of another endpoint kind is set (IDENTITY_ENDPOINT, ...)");
    if (dir && *dir && setenv("IMDS_CACHE_DIR", dir, 1) != 0) usage("cannot set IMDS_CACHE_DIR");

    for (i = 0; i < n_ids; i++) {
        r = imds_cache_identity_client_id((const uint8_t *)client_ids[i], strlen(client_ids[i]),
                                          &identities[i]);
        if (r != IMDS_CACHE_RESULT_OK) usage("a client id is not valid");
    }
    imds_cache_config_new(&config);
    if (explicit_endpoint)
        r = imds_cache_config_set_endpoint(config, IMDS_CACHE_FLAVOUR_IMDS, (const uint8_t *)url,
                                           strlen(url), NULL, 0);
    else
        r = imds_cache_config_set_endpoint_from_env(config);
    if (r == IMDS_CACHE_RESULT_OK)
        r = imds_cache_config_set_timeouts_ms(config, (uint64_t)(deadline_s * 1000.0 + 0.5), 1000, 10000);
    if (r == IMDS_CACHE_RESULT_OK) r = imds_cache_config_set_share(config, share_value);
    if (r == IMDS_CACHE_RESULT_OK) r = imds_cache_new(config, &cache);
    imds_cache_config_free(config);
    if (r != IMDS_CACHE_RESULT_OK) {
        uint8_t msg[256];
        size_t n = 0;
        imds_cache_result_message(r, msg, sizeof msg, &n);
        fprintf(stderr, "host_worker: cannot make the handle: %.*s (%u)\n", (int)n, (const char *)msg,
                (unsigned)r);
        return 1;
    }
    /* Before any call: the handle asks IMDS (at the loopback URL checked above), nothing else. */
    {
        uint32_t flavour = 0xffffffffu;
        if (imds_cache_flavour_of(cache, &flavour) != IMDS_CACHE_RESULT_OK || flavour != IMDS_CACHE_FLAVOUR_IMDS) {
            fprintf(stderr, "host_worker: the handle's endpoint is not IMDS (flavour %u)\n", (unsigned)flavour);
            imds_cache_free(cache);
            return 2;
        }
    }

    if (start_at_ms >= 0) {
        struct timespec ts;
        double now_ms, wait_ms;
        clock_gettime(CLOCK_REALTIME, &ts);
        now_ms = (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
        wait_ms = start_at_ms - now_ms;
        if (wait_ms > 60000) wait_ms = 60000; /* a wrong clock must not hang the worker */
        if (wait_ms > 0) {
            ts.tv_sec = (time_t)(wait_ms / 1000);
            ts.tv_nsec = (long)((wait_ms - (double)ts.tv_sec * 1000.0) * 1e6);
            nanosleep(&ts, NULL);
        }
    }
    for (i = 0; i < n_threads; i++) {
        if (pthread_create(&threads[i], NULL, worker, (void *)i) != 0) {
            fprintf(stderr, "host_worker: cannot start a thread\n");
            return 1;
        }
    }
    for (i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
    imds_cache_free(cache);
    snprintf(line, sizeof line, "DONE %llu %llu\n", (unsigned long long)total_calls,
             (unsigned long long)total_errors);
    emit(line);
    return total_errors > 0 ? 1 : 0;
}
