/*
 * The C API from C (and, compiled as C++11, from C++), against running emulators:
 * every function and every result code but PANIC; NULL and zero-length arguments; buffers one
 * byte short; 16 threads on one handle; fork; the sans-IO handle fed one byte at a time over a
 * real socket; Arc's challenge through both handles; a TLS refusal.
 *
 * Usage: test_capi IMDS_URL ARC_TOKEN_URL ARC_KEY_DIR FAULTY_URL CLIENT_ID OBJECT_ID RESOURCE_ID
 *   IMDS_URL       an emulator in imds mode (http://127.0.0.1:PORT) with user-assigned identities
 *   ARC_TOKEN_URL  an emulator in arc mode: its token URL; ARC_KEY_DIR its key folder
 *   FAULTY_URL     an emulator in imds mode answering 503 to everything
 *   CLIENT_ID, OBJECT_ID, RESOURCE_ID  the ids of one user-assigned identity of IMDS_URL
 *
 * Written in the common subset of C99 and C++11.
 */
#include "imds_cache.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int checks = 0;
static int failures = 0;
static bool seen[1000];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void note(imds_cache_result r) {
    pthread_mutex_lock(&lock);
    if ((uint32_t)r < 1000) seen[(uint32_t)r] = true;
    pthread_mutex_unlock(&lock);
}

#define CHECK(cond)                                                                   \
    do {                                                                              \
        pthread_mutex_lock(&lock);                                                    \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
        pthread_mutex_unlock(&lock);                                                  \
    } while (0)

#define EXPECT(call, want)                                                              \
    do {                                                                                \
        imds_cache_result got_ = (call);                                                \
        note(got_);                                                                     \
        pthread_mutex_lock(&lock);                                                      \
        checks++;                                                                       \
        if (got_ != (want)) {                                                           \
            failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s returned %u, expected %u (%s)\n", __FILE__,      \
                    __LINE__, #call, (unsigned)got_, (unsigned)(want), #want);          \
        }                                                                               \
        pthread_mutex_unlock(&lock);                                                    \
    } while (0)

#define S(literal) ((const uint8_t *)(literal)), (sizeof(literal) - 1)
#define STR(cstr) ((const uint8_t *)(cstr)), strlen(cstr)

/* Whether `text[0..n]` (not NUL-terminated) contains `needle`. */
static int contains(const uint8_t *text, size_t n, const char *needle) {
    size_t k = strlen(needle), i;
    for (i = 0; i + k <= n; i++)
        if (memcmp(text + i, needle, k) == 0) return 1;
    return 0;
}

static const char *ARM = "https://management.azure.com";
static const char *RESOURCES[3] = {"https://management.azure.com", "https://vault.azure.net",
                                   "https://storage.azure.com"};

static const char *imds_url, *arc_url, *arc_dir, *faulty_url, *client_id, *object_id,
    *resource_id;

/* ---- helpers ---------------------------------------------------------------------------- */

static imds_cache_config *new_config(uint32_t flavour, const char *url) {
    imds_cache_config *c = NULL;
    EXPECT(imds_cache_config_new(&c), IMDS_CACHE_RESULT_OK);
    if (url) EXPECT(imds_cache_config_set_endpoint(c, flavour, STR(url), NULL, 0), IMDS_CACHE_RESULT_OK);
    return c;
}

static imds_cache *new_full(imds_cache_config *c) {
    imds_cache *h = NULL;
    EXPECT(imds_cache_new(c, &h), IMDS_CACHE_RESULT_OK);
    imds_cache_config_free(c);
    return h;
}

/* A sans-IO handle in malloc'd memory (8-aligned). */
static imds_cache_sansio *new_sansio(imds_cache_config *c, void **mem) {
    size_t size = 0;
    imds_cache_sansio *h = NULL;
    EXPECT(imds_cache_sansio_storage_size(c, &size), IMDS_CACHE_RESULT_OK);
    *mem = malloc(size);
    CHECK(*mem != NULL);
    EXPECT(imds_cache_sansio_init(*mem, size, c, &h), IMDS_CACHE_RESULT_OK);
    CHECK((void *)h == *mem);
    imds_cache_config_free(c);
    return h;
}

static void end_sansio(void *mem) {
    EXPECT(imds_cache_sansio_deinit((imds_cache_sansio *)mem), IMDS_CACHE_RESULT_OK);
    free(mem);
}

static int connect_to(const uint8_t *host, size_t host_len, uint16_t port) {
    char name[256];
    char service[8];
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    int fd = -1;
    if (host_len >= sizeof name) return -1;
    memcpy(name, host, host_len);
    name[host_len] = 0;
    snprintf(service, sizeof service, "%u", (unsigned)port);
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(name, service, &hints, &res) != 0) return -1;
    fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Sends `req` and reads the whole response (the emulator closes after each). */
static size_t exchange(const imds_cache_request_info *info, const uint8_t *req, size_t req_len,
                       uint8_t *resp, size_t cap) {
    size_t got = 0;
    int fd = connect_to(info->host, info->host_len, info->port);
    CHECK(fd >= 0);
    if (fd < 0) return 0;
    CHECK(write(fd, req, req_len) == (ssize_t)req_len);
    for (;;) {
        ssize_t n = read(fd, resp + got, cap - got);
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    return got;
}

/* Feeds resp[0..len] one byte at a time; returns the outcome (DONE at the last byte only). */
static imds_cache_outcome feed_bytewise(imds_cache_sansio *h, uint64_t ticket, uint8_t *resp, size_t len) {
    imds_cache_outcome out;
    size_t n;
    memset(&out, 0, sizeof out);
    for (n = 1; n <= len; n++) {
        EXPECT(imds_cache_sansio_feed(h, ticket, resp, n, imds_cache_now_ms(), &out), IMDS_CACHE_RESULT_OK);
        if (out.kind != IMDS_CACHE_OUTCOME_KIND_NEED_MORE) {
            CHECK(n == len);
            break;
        }
    }
    return out;
}

/* ---- the tests -------------------------------------------------------------------------- */

static void test_messages_and_version(void) {
    uint32_t code;
    size_t n = 0, m = 0;
    uint8_t buf[256];
    int known = 0;
    for (code = 0; code < 1000; code++) {
        imds_cache_result r = imds_cache_result_message(code, NULL, 0, &n);
        if (r == IMDS_CACHE_RESULT_INVALID_ARGUMENT) continue;
        known++;
        CHECK(r == IMDS_CACHE_RESULT_BUFFER_TOO_SMALL && n > 0 && n < sizeof buf);
        memset(buf, 0xEE, sizeof buf);
        EXPECT(imds_cache_result_message(code, buf, n - 1, &m), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
        CHECK(m == n && buf[n - 1] == 0xEE);
        EXPECT(imds_cache_result_message(code, buf, sizeof buf, &m), IMDS_CACHE_RESULT_OK);
        CHECK(m == n);
    }
    CHECK(known == 27);
    EXPECT(imds_cache_result_message(IMDS_CACHE_RESULT_OK, buf, sizeof buf, NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_result_message(IMDS_CACHE_RESULT_OK, NULL, 10, &n), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_failure_message(IMDS_CACHE_FAILURE_GONE, buf, sizeof buf, &n), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_failure_message(0, buf, sizeof buf, &n), IMDS_CACHE_RESULT_INVALID_ARGUMENT);

    EXPECT(imds_cache_version(buf, sizeof buf, &n), IMDS_CACHE_RESULT_OK);
    CHECK(n == strlen(IMDS_CACHE_VERSION) && memcmp(buf, IMDS_CACHE_VERSION, n) == 0);
    EXPECT(imds_cache_version(NULL, 0, &n), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(n == strlen(IMDS_CACHE_VERSION));
    CHECK(imds_cache_now_ms() > 1700000000000ULL);
}

static void test_config(void) {
    imds_cache_config *c = NULL;
    EXPECT(imds_cache_config_new(NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    imds_cache_config_free(NULL);
    EXPECT(imds_cache_config_new(&c), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_capacity(NULL, 1), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_config_set_capacity(c, 0), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_capacity(c, 64), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_bytes_per_entry(c, 1), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_bytes_per_entry(c, 4096), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_max_token_bytes(c, 1024), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_max_token_bytes(c, 32768), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_budget(c, 500, 1000, 5), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_budget(c, 20, 1000, 5), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_fetch_timeout_ms(c, 0), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_fetch_timeout_ms(c, 30000), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_lifetimes_ms(c, 60000, 300000), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_backoff_ms(c, 10, 5, 0), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_backoff_ms(c, 1000, 16000, 30000), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_verify_client_id(c, true), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_seed(c, 7), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_arc_key_dir(c, NULL, 0), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_arc_key_dir(c, NULL, 4), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_config_set_timeouts_ms(c, 90000, 0, 10000), IMDS_CACHE_RESULT_INVALID_CONFIG);
    EXPECT(imds_cache_config_set_timeouts_ms(c, 90000, 1000, 10000), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_refresher(c, true), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_endpoint(c, 0, S("gopher://x"), NULL, 0), IMDS_CACHE_RESULT_INVALID_ENDPOINT);
    EXPECT(imds_cache_config_set_endpoint(c, 42, NULL, 0, NULL, 0), IMDS_CACHE_RESULT_INVALID_ARGUMENT);
    EXPECT(imds_cache_config_set_default_client_id(c, STR(client_id)), IMDS_CACHE_RESULT_INVALID_ARGUMENT);
    EXPECT(imds_cache_config_set_endpoint(c, IMDS_CACHE_FLAVOUR_MSI2017, S("http://127.0.0.1:1/msi/token"), S("s")), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_default_client_id(c, STR(client_id)), IMDS_CACHE_RESULT_OK);
    /* The environment (no managed-identity variables here): IMDS. */
    EXPECT(imds_cache_config_set_endpoint_from_env(c), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_endpoint_from_env(NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    imds_cache_config_free(c);
}

static void test_identities(void) {
    imds_cache_identity id;
    uint8_t scratch[1024];
    imds_cache_identity out[4];
    size_t n = 0;
    bool sys = false;
    char json[1024];
    EXPECT(imds_cache_identity_system(&id), IMDS_CACHE_RESULT_OK);
    CHECK(id.kind == IMDS_CACHE_IDENTITY_KIND_SYSTEM && id.value_len == 0);
    EXPECT(imds_cache_identity_system(NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_identity_client_id(STR(client_id), &id), IMDS_CACHE_RESULT_OK);
    CHECK(id.kind == IMDS_CACHE_IDENTITY_KIND_CLIENT_ID && id.value == (const uint8_t *)client_id);
    EXPECT(imds_cache_identity_object_id(STR(object_id), &id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_identity_resource_id(STR(resource_id), &id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_identity_client_id(S("not-a-guid"), &id), IMDS_CACHE_RESULT_INVALID_IDENTITY);
    EXPECT(imds_cache_identity_client_id(NULL, 0, &id), IMDS_CACHE_RESULT_INVALID_IDENTITY);
    EXPECT(imds_cache_identity_client_id(NULL, 36, &id), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_identity_object_id(STR(client_id), NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_identity_resource_id(S("/not/an/arm/id"), &id), IMDS_CACHE_RESULT_INVALID_IDENTITY);
    CHECK(id.kind == IMDS_CACHE_IDENTITY_KIND_RESOURCE_ID); /* untouched on failure */

    snprintf(json, sizeof json,
             "{\"type\":\"SystemAssigned,UserAssigned\",\"userAssignedIdentities\":{\"%s\":{}}}",
             resource_id);
    EXPECT(imds_cache_identities_from_arm(STR(json), scratch, sizeof scratch, NULL, 0, &n, &sys),
           IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(n == 1);
    EXPECT(imds_cache_identities_from_arm(STR(json), scratch, sizeof scratch, out, 4, &n, &sys),
           IMDS_CACHE_RESULT_OK);
    CHECK(n == 1 && sys && out[0].kind == IMDS_CACHE_IDENTITY_KIND_RESOURCE_ID);
    CHECK(out[0].value_len == strlen(resource_id) && memcmp(out[0].value, resource_id, out[0].value_len) == 0);
    EXPECT(imds_cache_identities_from_arm(S("{\"type\":1}"), scratch, sizeof scratch, out, 4, &n, &sys),
           IMDS_CACHE_RESULT_INVALID_ARM_IDENTITY);
    EXPECT(imds_cache_identities_from_arm(STR(json), scratch, 2, out, 4, &n, &sys),
           IMDS_CACHE_RESULT_INVALID_ARGUMENT);
    EXPECT(imds_cache_identities_from_arm(STR(json), scratch, sizeof scratch, out, 4, NULL, &sys),
           IMDS_CACHE_RESULT_NULL_POINTER);
}

/* ---- the full handle -------------------------------------------------------------------- */

struct worker {
    imds_cache *cache;
    imds_cache_identity ids[2];
    int ok;
};

static void *worker_main(void *arg) {
    struct worker *w = (struct worker *)arg;
    uint8_t *buf = (uint8_t *)malloc(16384);
    int i;
    for (i = 0; i < 200; i++) {
        size_t n = 0;
        uint64_t exp = 0;
        const char *res = RESOURCES[i % 3];
        imds_cache_result r = imds_cache_get_token(w->cache, &w->ids[i % 2], STR(res), buf, 16384, &n, &exp);
        note(r);
        if (r == IMDS_CACHE_RESULT_OK && n > 100) w->ok++;
    }
    free(buf);
    return NULL;
}

static void test_full_handle(void) {
    imds_cache_config *c = new_config(IMDS_CACHE_FLAVOUR_IMDS, imds_url);
    imds_cache *h;
    imds_cache_identity sys_id, user;
    uint8_t *buf = (uint8_t *)malloc(16384);
    uint8_t *exact;
    size_t n = 0, m = 0;
    uint64_t exp = 0;
    imds_cache_stats stats;
    imds_cache_prefetch_report report;
    imds_cache_str res[3];
    pthread_t threads[16];
    struct worker workers[16];
    uint32_t flavour = 99;
    bool dropped = false;
    int i, ok = 0;
    pid_t pid;
    int status = 0;

    EXPECT(imds_cache_config_set_capacity(c, 64), IMDS_CACHE_RESULT_OK);
    h = new_full(c);
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_identity_client_id(STR(client_id), &user), IMDS_CACHE_RESULT_OK);

    /* NULL and zero-length arguments. */
    EXPECT(imds_cache_get_token(NULL, &user, STR(ARM), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_get_token(h, NULL, STR(ARM), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_get_token(h, &user, NULL, 5, buf, 16384, &n, &exp), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_get_token(h, &user, NULL, 0, buf, 16384, &n, &exp), IMDS_CACHE_RESULT_INVALID_RESOURCE);
    EXPECT(imds_cache_get_token(h, &user, S("a b"), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_INVALID_RESOURCE);
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), NULL, 16384, &n, &exp), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), buf, 16384, NULL, &exp), IMDS_CACHE_RESULT_NULL_POINTER);

    /* A token; then the size query and a buffer one byte short (exactly sized by malloc, so
     * ASan/valgrind catch any write past it). */
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_OK);
    CHECK(n > 1000 && exp > imds_cache_now_ms() / 1000);
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), NULL, 0, &m, NULL), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(m == n);
    exact = (uint8_t *)malloc(n - 1);
    m = 0;
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), exact, n - 1, &m, NULL), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(m == n);
    free(exact);
    exact = (uint8_t *)malloc(n);
    EXPECT(imds_cache_get_token(h, &user, STR(ARM), exact, n, &m, NULL), IMDS_CACHE_RESULT_OK);
    CHECK(m == n && memcmp(exact, buf, n) == 0);
    free(exact);

    /* An identity the endpoint does not know: FAILED (400). */
    {
        imds_cache_identity stranger;
        EXPECT(imds_cache_identity_client_id(S("00000000-0000-0000-0000-00000000abcd"), &stranger), IMDS_CACHE_RESULT_OK);
        EXPECT(imds_cache_get_token(h, &stranger, STR(ARM), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_FAILED);
        /* Its text, with the endpoint's own error: the size query, then the text. */
        {
            uint8_t text[512];
            size_t need = 0, got = 0;
            EXPECT(imds_cache_last_error(NULL, 0, &need), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
            CHECK(need > 0 && need <= sizeof text);
            EXPECT(imds_cache_last_error(text, need - 1, &got), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
            CHECK(got == need);
            EXPECT(imds_cache_last_error(text, sizeof text, &got), IMDS_CACHE_RESULT_OK);
            CHECK(got == need);
            CHECK(contains(text, got, "HTTP 400") && contains(text, got, "Identity not found"));
            /* It names the identity and the endpoint, and the status once. */
            CHECK(contains(text, got, "client_id=00000000-0000-0000-0000-00000000abcd"));
            CHECK(contains(text, got, "endpoint http://127.0.0.1:"));
            CHECK(!contains(text, got, "(HTTP 400)"));
            /* A hit leaves it as it was. */
            EXPECT(imds_cache_get_token(h, &user, STR(ARM), buf, 16384, &n, &exp), IMDS_CACHE_RESULT_OK);
            EXPECT(imds_cache_last_error(text, sizeof text, &got), IMDS_CACHE_RESULT_OK);
            CHECK(got == need && contains(text, got, "Identity not found"));
            EXPECT(imds_cache_last_error(text, sizeof text, NULL), IMDS_CACHE_RESULT_NULL_POINTER);
        }
    }

    /* Prefetch: both identities × 3 resources. */
    for (i = 0; i < 3; i++) {
        res[i].ptr = (const uint8_t *)RESOURCES[i];
        res[i].len = strlen(RESOURCES[i]);
    }
    {
        imds_cache_identity both[2];
        both[0] = sys_id;
        both[1] = user;
        EXPECT(imds_cache_prefetch(h, both, 2, res, 3, 0, &report), IMDS_CACHE_RESULT_OK);
        CHECK(report.total == 6 && report.ok == 6 && report.failed == 0);
        CHECK(report.first_error == IMDS_CACHE_RESULT_OK);
        EXPECT(imds_cache_prefetch(h, both, 2, NULL, 3, 0, &report), IMDS_CACHE_RESULT_NULL_POINTER);
        EXPECT(imds_cache_prefetch(h, both, 2, res, 3, 0, NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    }

    /* 16 threads on one handle: every call a hit, no new fetch. */
    EXPECT(imds_cache_get_stats(h, &stats), IMDS_CACHE_RESULT_OK);
    {
        uint64_t tokens_before = stats.tokens;
        for (i = 0; i < 16; i++) {
            workers[i].cache = h;
            workers[i].ids[0] = sys_id;
            workers[i].ids[1] = user;
            workers[i].ok = 0;
            CHECK(pthread_create(&threads[i], NULL, worker_main, &workers[i]) == 0);
        }
        for (i = 0; i < 16; i++) {
            pthread_join(threads[i], NULL);
            ok += workers[i].ok;
        }
        CHECK(ok == 16 * 200);
        EXPECT(imds_cache_get_stats(h, &stats), IMDS_CACHE_RESULT_OK);
        CHECK(stats.tokens == tokens_before);
        CHECK(stats.hits >= 16 * 200);
    }
    EXPECT(imds_cache_get_stats(h, NULL), IMDS_CACHE_RESULT_NULL_POINTER);

    /* Invalidate, flavour. */
    EXPECT(imds_cache_invalidate(h, &user, STR(ARM), &dropped), IMDS_CACHE_RESULT_OK);
    CHECK(dropped);
    EXPECT(imds_cache_invalidate(h, &user, STR(ARM), NULL), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_flavour_of(h, &flavour), IMDS_CACHE_RESULT_OK);
    CHECK(flavour == IMDS_CACHE_FLAVOUR_IMDS);

    /* fork: the child keeps the tokens (D12). Skipped under valgrind
     * (IMDS_CACHE_TEST_NO_FORK): a child's leak check counts the memory of the parent's threads,
     * which do not exist in it; the sanitizer runs cover fork. */
    fflush(NULL);
    pid = getenv("IMDS_CACHE_TEST_NO_FORK") ? -1 : fork();
    if (pid < 0) goto after_fork;
    if (pid == 0) {
        uint8_t child_buf[8192];
        size_t cn = 0;
        int code = 0;
        if (imds_cache_atfork_child(h) != IMDS_CACHE_RESULT_OK) code = 1;
        if (imds_cache_get_token(h, &sys_id, STR(ARM), child_buf, sizeof child_buf, &cn, NULL) != IMDS_CACHE_RESULT_OK) code = 2;
        _exit(code);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
after_fork:

    imds_cache_free(h);
    imds_cache_free(NULL);
    free(buf);
}

static void test_unavailable_and_deadline(void) {
    uint8_t buf[64];
    size_t n = 0;
    imds_cache_identity sys_id;
    imds_cache *h;
    imds_cache_config *c;
    imds_cache_stats stats;
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);

    /* Nothing listens on port 1: no managed identity here. */
    h = new_full(new_config(IMDS_CACHE_FLAVOUR_IMDS, "http://127.0.0.1:1"));
    EXPECT(imds_cache_get_token(h, &sys_id, STR(ARM), buf, sizeof buf, &n, NULL), IMDS_CACHE_RESULT_UNAVAILABLE);
    {
        uint8_t text[256];
        size_t got = 0;
        EXPECT(imds_cache_last_error(text, sizeof text, &got), IMDS_CACHE_RESULT_OK);
        CHECK(contains(text, got, "no managed-identity endpoint"));
    }
    imds_cache_free(h);

    /* An endpoint that answers 503 to everything: retried until the deadline. */
    c = new_config(IMDS_CACHE_FLAVOUR_IMDS, faulty_url);
    EXPECT(imds_cache_config_set_timeouts_ms(c, 1500, 1000, 1000), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_backoff_ms(c, 100, 200, 1000), IMDS_CACHE_RESULT_OK);
    h = new_full(c);
    EXPECT(imds_cache_get_token(h, &sys_id, STR(ARM), buf, sizeof buf, &n, NULL), IMDS_CACHE_RESULT_DEADLINE);
    EXPECT(imds_cache_get_stats(h, &stats), IMDS_CACHE_RESULT_OK);
    CHECK(stats.failures_retry >= 2);
    imds_cache_free(h);

    /* HTTPS needs the sans-IO handle. */
    c = new_config(IMDS_CACHE_FLAVOUR_SERVICE_FABRIC, NULL);
    EXPECT(imds_cache_config_set_endpoint(c, IMDS_CACHE_FLAVOUR_SERVICE_FABRIC, S("https://127.0.0.1:2377/t"), S("h")), IMDS_CACHE_RESULT_OK);
    h = NULL;
    EXPECT(imds_cache_new(c, &h), IMDS_CACHE_RESULT_UNSUPPORTED);
    CHECK(h == NULL);
    imds_cache_config_free(c);
}

/* ---- the sans-IO handle ----------------------------------------------------------------- */

static void test_sansio_memory(void) {
    imds_cache_config *c = new_config(IMDS_CACHE_FLAVOUR_IMDS, imds_url);
    size_t size = 0, i;
    uint8_t *mem;
    imds_cache_sansio *h = NULL;
    bool wiped = true;
    EXPECT(imds_cache_config_set_capacity(c, 4), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_storage_size(c, &size), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_storage_size(c, NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    mem = (uint8_t *)malloc(size + 8);
    EXPECT(imds_cache_sansio_init(NULL, size, c, &h), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_sansio_init(mem + 1, size, c, &h), IMDS_CACHE_RESULT_MISALIGNED);
    EXPECT(imds_cache_sansio_init(mem, size - 1, c, &h), IMDS_CACHE_RESULT_STORAGE_TOO_SMALL);
    CHECK(h == NULL);
    EXPECT(imds_cache_sansio_init(mem, size, c, &h), IMDS_CACHE_RESULT_OK);
    imds_cache_config_free(c);
    CHECK((void *)h == (void *)mem);
    EXPECT(imds_cache_sansio_deinit(NULL), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_sansio_deinit(h), IMDS_CACHE_RESULT_OK);
    for (i = 0; i < size; i++) wiped = wiped && mem[i] == 0;
    CHECK(wiped);
    /* Ended: the memory holds no handle any more. */
    EXPECT(imds_cache_sansio_deinit(h), IMDS_CACHE_RESULT_INVALID_HANDLE);
    free(mem);
}

/* Lookup → request → real socket → fed one byte at a time → hit. */
static void test_sansio_fetch(void) {
    void *mem;
    imds_cache_config *c = new_config(IMDS_CACHE_FLAVOUR_IMDS, imds_url);
    imds_cache_sansio *h;
    imds_cache_identity user;
    imds_cache_lookup_answer a;
    imds_cache_request_info info;
    imds_cache_outcome out;
    uint8_t req[8192];
    uint8_t *resp = (uint8_t *)malloc(65536);
    uint8_t tok[16384];
    size_t n = 0, m = 0, got;
    uint64_t now = imds_cache_now_ms();
    uint64_t next = 0;
    imds_cache_refresh refresh;

    EXPECT(imds_cache_config_set_capacity(c, 8), IMDS_CACHE_RESULT_OK);
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_identity_client_id(STR(client_id), &user), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[1]), now, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_FETCH && a.has_ticket && n == 0);
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[1]), now, tok, sizeof tok, NULL, &a), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_sansio_request(h, a.ticket, now, NULL, 0, &n, &info), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    EXPECT(imds_cache_sansio_request(h, a.ticket, now, req, n - 1, &m, &info), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
    CHECK(m == n);
    EXPECT(imds_cache_sansio_request(h, a.ticket, now, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_OK);
    CHECK(info.method == IMDS_CACHE_METHOD_GET && !info.tls);
    got = exchange(&info, req, n, resp, 65536);
    CHECK(got > 1000);
    out = feed_bytewise(h, a.ticket, resp, got);
    CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_TOKEN && out.token_len > 1000);
    /* The finished ticket is stale. */
    EXPECT(imds_cache_sansio_feed(h, a.ticket, resp, got, now, &out), IMDS_CACHE_RESULT_STALE_TICKET);

    EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[1]), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_HIT && n == a.token_len && n > 1000);
    {
        uint8_t *exact = (uint8_t *)malloc(n - 1);
        EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[1]), imds_cache_now_ms(), exact, n - 1, &m, &a), IMDS_CACHE_RESULT_BUFFER_TOO_SMALL);
        CHECK(m == n);
        free(exact);
    }
    EXPECT(imds_cache_sansio_next_deadline(h, &next), IMDS_CACHE_RESULT_OK);
    CHECK(next > now);
    EXPECT(imds_cache_sansio_poll_refresh(h, imds_cache_now_ms(), &refresh), IMDS_CACHE_RESULT_OK);
    CHECK(!refresh.has_ticket && refresh.next_ms == next);
    EXPECT(imds_cache_sansio_poll_refresh(h, next, &refresh), IMDS_CACHE_RESULT_OK);
    CHECK(refresh.has_ticket);
    EXPECT(imds_cache_sansio_cancel(h, refresh.ticket), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_cancel(h, refresh.ticket), IMDS_CACHE_RESULT_STALE_TICKET);

    /* The transport failed: a retry (a token was received from this endpoint before). */
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[2]), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_fail(h, a.ticket, 77, now, &out), IMDS_CACHE_RESULT_INVALID_ARGUMENT);
    EXPECT(imds_cache_sansio_fail(h, a.ticket, IMDS_CACHE_TRANSPORT_RESET, imds_cache_now_ms(), &out), IMDS_CACHE_RESULT_OK);
    CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_RETRY && out.failure == IMDS_CACHE_FAILURE_CONNECTION_LOST);
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(RESOURCES[2]), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_FAILED && a.retry_at_ms > now);

    /* EOF on a body delimited by the close. */
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(ARM), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    {
        static const char partial[] = "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"access";
        memcpy(resp, partial, sizeof partial - 1);
        EXPECT(imds_cache_sansio_eof(h, a.ticket, resp, sizeof partial - 1, imds_cache_now_ms(), &out), IMDS_CACHE_RESULT_OK);
        CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_RETRY && out.failure == IMDS_CACHE_FAILURE_TRUNCATED);
    }
    {
        imds_cache_stats stats;
        uint32_t flavour = 99;
        bool dropped = false;
        EXPECT(imds_cache_sansio_get_stats(h, &stats), IMDS_CACHE_RESULT_OK);
        CHECK(stats.tokens == 1 && stats.failures_retry == 2);
        EXPECT(imds_cache_sansio_flavour_of(h, &flavour), IMDS_CACHE_RESULT_OK);
        CHECK(flavour == IMDS_CACHE_FLAVOUR_IMDS);
        EXPECT(imds_cache_sansio_invalidate(h, &user, STR(RESOURCES[1]), &dropped), IMDS_CACHE_RESULT_OK);
        CHECK(dropped);
    }
    end_sansio(mem);
    free(resp);
}

struct busy_arg {
    imds_cache_sansio *h;
    volatile int stop;
    int busy;
};

static void *busy_main(void *arg) {
    struct busy_arg *b = (struct busy_arg *)arg;
    imds_cache_identity sys_id;
    imds_cache_lookup_answer a;
    uint8_t tok[64];
    size_t n = 0;
    imds_cache_identity_system(&sys_id);
    while (!b->stop) {
        imds_cache_result r = imds_cache_sansio_lookup(b->h, &sys_id, S("https://vault.azure.net"), 1, tok, sizeof tok, &n, &a);
        if (r == IMDS_CACHE_RESULT_BUSY) {
            note(r);
            b->busy++;
        }
    }
    return NULL;
}

/* Canned responses: result codes that need a particular state. */
static void test_sansio_states(void) {
    void *mem;
    imds_cache_sansio *h;
    imds_cache_config *c;
    imds_cache_identity sys_id, user;
    imds_cache_lookup_answer a;
    imds_cache_request_info info;
    imds_cache_outcome out;
    uint8_t req[8192];
    uint8_t tok[64];
    size_t n = 0;
    static const char challenge_fmt[] =
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=/keys/k.key\r\nContent-Length: 0\r\n\r\n";
    uint8_t challenge[sizeof challenge_fmt];
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_identity_client_id(STR(client_id), &user), IMDS_CACHE_RESULT_OK);

    /* CACHE_FULL: one slot, its fetch in flight. */
    c = new_config(IMDS_CACHE_FLAVOUR_IMDS, NULL);
    EXPECT(imds_cache_config_set_capacity(c, 1), IMDS_CACHE_RESULT_OK);
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_FETCH);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, S("https://vault.azure.net"), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_CACHE_FULL);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_PENDING);
    /* BUSY: two threads on one sans-IO handle (not allowed; refused, never a race). Skipped
     * under valgrind (IMDS_CACHE_TEST_NO_RACE), which runs one thread at a time, so the two
     * calls may never overlap; the sanitizer builds run it. */
    if (!getenv("IMDS_CACHE_TEST_NO_RACE")) {
        struct busy_arg b1, b2;
        pthread_t t1, t2;
        uint64_t start = imds_cache_now_ms();
        b1.h = b2.h = h;
        b1.stop = b2.stop = 0;
        b1.busy = b2.busy = 0;
        pthread_create(&t1, NULL, busy_main, &b1);
        pthread_create(&t2, NULL, busy_main, &b2);
        while (b1.busy + b2.busy == 0 && imds_cache_now_ms() - start < 5000) {
            struct timespec ts;
            ts.tv_sec = 0;
            ts.tv_nsec = 1000000;
            nanosleep(&ts, NULL);
        }
        b1.stop = b2.stop = 1;
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        CHECK(b1.busy + b2.busy > 0);
    }
    end_sansio(mem);

    /* Arc, canned: NO_CHALLENGE, THROTTLED (a budget of 1 start a minute), INVALID_ARC_KEY. */
    c = new_config(IMDS_CACHE_FLAVOUR_ARC, "http://127.0.0.1:40342/metadata/identity/oauth2/token");
    EXPECT(imds_cache_config_set_arc_key_dir(c, S("/keys")), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_budget(c, 1, 60000, 1), IMDS_CACHE_RESULT_OK);
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_complete_challenge(h, a.ticket, S("key"), 1000000, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_NO_CHALLENGE);
    EXPECT(imds_cache_sansio_request(h, a.ticket, 1000000, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_OK);
    memcpy(challenge, challenge_fmt, sizeof challenge_fmt);
    EXPECT(imds_cache_sansio_feed(h, a.ticket, challenge, sizeof challenge_fmt - 1, 1000001, &out), IMDS_CACHE_RESULT_OK);
    CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_NEED_KEY_FILE);
    CHECK(out.key_path_len == 11 && memcmp(out.key_path, "/keys/k.key", 11) == 0);
    EXPECT(imds_cache_sansio_complete_challenge(h, a.ticket, S("0123456789abcdef"), 1000002, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_THROTTLED);
    EXPECT(imds_cache_sansio_complete_challenge(h, a.ticket, S("bad key"), 1000002, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_INVALID_ARC_KEY);
    end_sansio(mem);

    /* UNSUPPORTED_SELECTOR: Cloud Shell has no user-assigned identities. */
    c = new_config(IMDS_CACHE_FLAVOUR_CLOUD_SHELL, "http://127.0.0.1:1/oauth2/token");
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_sansio_lookup(h, &user, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_request(h, a.ticket, 1000000, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_UNSUPPORTED_SELECTOR);
    end_sansio(mem);

    /* MISSING_SECRET: App Service without IDENTITY_HEADER. */
    c = new_config(IMDS_CACHE_FLAVOUR_APP_SERVICE2019, "http://127.0.0.1:1/msi/token");
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_request(h, a.ticket, 1000000, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_MISSING_SECRET);
    end_sansio(mem);

    /* REQUEST_FAILED: Service Fabric over plain http. */
    c = new_config(IMDS_CACHE_FLAVOUR_SERVICE_FABRIC, NULL);
    EXPECT(imds_cache_config_set_endpoint(c, IMDS_CACHE_FLAVOUR_SERVICE_FABRIC, S("http://127.0.0.1:2377/t"), S("h")), IMDS_CACHE_RESULT_OK);
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), 1000000, tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_request(h, a.ticket, 1000000, req, sizeof req, &n, &info), IMDS_CACHE_RESULT_REQUEST_FAILED);
    end_sansio(mem);
}

/* Arc's challenge against the emulator: the sans-IO path (reading the key file here), then
 * the full handle. */
static void test_arc(void) {
    void *mem;
    imds_cache_config *c = new_config(IMDS_CACHE_FLAVOUR_ARC, arc_url);
    imds_cache_sansio *h;
    imds_cache *full;
    imds_cache_identity sys_id;
    imds_cache_lookup_answer a;
    imds_cache_request_info info;
    imds_cache_outcome out;
    uint8_t req[8192];
    uint8_t *resp = (uint8_t *)malloc(65536);
    uint8_t tok[16384];
    uint8_t key[4097];
    char path[1024];
    size_t n = 0, got, key_len;
    FILE *f;

    EXPECT(imds_cache_config_set_arc_key_dir(c, STR(arc_dir)), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_capacity(c, 4), IMDS_CACHE_RESULT_OK);
    h = new_sansio(c, &mem);
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_sansio_request(h, a.ticket, imds_cache_now_ms(), req, sizeof req, &n, &info), IMDS_CACHE_RESULT_OK);
    got = exchange(&info, req, n, resp, 65536);
    out = feed_bytewise(h, a.ticket, resp, got);
    CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_NEED_KEY_FILE && out.key_path_len < sizeof path);
    memcpy(path, out.key_path, out.key_path_len);
    path[out.key_path_len] = 0;
    f = fopen(path, "rb");
    CHECK(f != NULL);
    key_len = f ? fread(key, 1, sizeof key, f) : 0;
    if (f) fclose(f);
    EXPECT(imds_cache_sansio_complete_challenge(h, a.ticket, key, key_len, imds_cache_now_ms(), req, sizeof req, &n, &info), IMDS_CACHE_RESULT_OK);
    got = exchange(&info, req, n, resp, 65536);
    out = feed_bytewise(h, a.ticket, resp, got);
    CHECK(out.kind == IMDS_CACHE_OUTCOME_KIND_TOKEN);
    EXPECT(imds_cache_sansio_lookup(h, &sys_id, STR(ARM), imds_cache_now_ms(), tok, sizeof tok, &n, &a), IMDS_CACHE_RESULT_OK);
    CHECK(a.kind == IMDS_CACHE_LOOKUP_KIND_HIT && n > 1000);
    end_sansio(mem);
    free(resp);

    c = new_config(IMDS_CACHE_FLAVOUR_ARC, arc_url);
    EXPECT(imds_cache_config_set_arc_key_dir(c, STR(arc_dir)), IMDS_CACHE_RESULT_OK);
    full = new_full(c);
    EXPECT(imds_cache_get_token(full, &sys_id, STR(RESOURCES[1]), tok, sizeof tok, &n, NULL), IMDS_CACHE_RESULT_OK);
    CHECK(n > 1000);
    imds_cache_free(full);
}

/* TLS: Service Fabric from the environment, pointed at a plain-HTTP port with a thumbprint.
 * The handshake meets plain HTTP: refused, not a request sent in the clear. */
static void test_tls_refusal(void) {
    char url[256];
    imds_cache *h = NULL;
    imds_cache_identity sys_id;
    uint8_t buf[64];
    size_t n = 0;
    snprintf(url, sizeof url, "https://%s/metadata/identity/oauth2/token", imds_url + strlen("http://"));
    setenv("IDENTITY_ENDPOINT", url, 1);
    setenv("IDENTITY_HEADER", "h", 1);
    setenv("IDENTITY_SERVER_THUMBPRINT", "3E59E0E10C56CFF39C92FFF82DDA8992F10A4A69", 1);
    EXPECT(imds_cache_new(NULL, &h), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_get_token(h, &sys_id, STR(ARM), buf, sizeof buf, &n, NULL), IMDS_CACHE_RESULT_TLS);
    imds_cache_free(h);
    unsetenv("IDENTITY_ENDPOINT");
    unsetenv("IDENTITY_HEADER");
    unsetenv("IDENTITY_SERVER_THUMBPRINT");
}

/* Two handles that share the host's table (each its own open file description, as two
 * processes would have): the second one's first call is a hit on the first one's token. */
static void test_host_share(void) {
    char dir[] = "/tmp/imds-capi-share-XXXXXX";
    imds_cache_config *c;
    imds_cache *a, *b;
    imds_cache_identity sys_id;
    imds_cache_stats stats;
    uint8_t *one = (uint8_t *)malloc(16384), *two = (uint8_t *)malloc(16384);
    size_t n = 0, m = 0;
    char cmd[96];

    CHECK(mkdtemp(dir) != NULL);
    setenv("IMDS_CACHE_DIR", dir, 1);
    c = new_config(IMDS_CACHE_FLAVOUR_IMDS, imds_url);
    EXPECT(imds_cache_config_set_share(NULL, IMDS_CACHE_SHARE_HOST), IMDS_CACHE_RESULT_NULL_POINTER);
    EXPECT(imds_cache_config_set_share(c, 3), IMDS_CACHE_RESULT_INVALID_ARGUMENT);
    EXPECT(imds_cache_config_set_share(c, IMDS_CACHE_SHARE_HOST), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_capacity(c, 64), IMDS_CACHE_RESULT_OK);
    a = new_full(c);
    c = new_config(IMDS_CACHE_FLAVOUR_IMDS, imds_url);
    EXPECT(imds_cache_config_set_share(c, IMDS_CACHE_SHARE_HOST), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_config_set_capacity(c, 64), IMDS_CACHE_RESULT_OK);
    b = new_full(c);
    EXPECT(imds_cache_identity_system(&sys_id), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_get_token(a, &sys_id, STR(ARM), one, 16384, &n, NULL), IMDS_CACHE_RESULT_OK);
    EXPECT(imds_cache_get_token(b, &sys_id, STR(ARM), two, 16384, &m, NULL), IMDS_CACHE_RESULT_OK);
    CHECK(n == m && memcmp(one, two, n) == 0);
    EXPECT(imds_cache_get_stats(b, &stats), IMDS_CACHE_RESULT_OK);
    CHECK(stats.hits == 1 && stats.fetches == 0);
    imds_cache_free(a);
    imds_cache_free(b);
    unsetenv("IMDS_CACHE_DIR");
    free(one);
    free(two);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
}

int main(int argc, char **argv) {
    uint32_t code;
    int missing = 0;
    if (argc != 8) {
        fprintf(stderr, "usage: %s IMDS_URL ARC_TOKEN_URL ARC_KEY_DIR FAULTY_URL CLIENT_ID OBJECT_ID RESOURCE_ID\n", argv[0]);
        return 2;
    }
    imds_url = argv[1];
    arc_url = argv[2];
    arc_dir = argv[3];
    faulty_url = argv[4];
    client_id = argv[5];
    object_id = argv[6];
    resource_id = argv[7];

    {
        /* No failure on this thread yet: the last error is empty. */
        size_t n = 1;
        EXPECT(imds_cache_last_error(NULL, 0, &n), IMDS_CACHE_RESULT_OK);
        CHECK(n == 0);
    }
    test_messages_and_version();
    test_config();
    test_identities();
    test_full_handle();
    test_unavailable_and_deadline();
    test_sansio_memory();
    test_sansio_fetch();
    test_sansio_states();
    test_arc();
    test_tls_refusal();
    test_host_share();

    /* Every result code was produced by some call, except PANIC (nothing panics). */
    for (code = 0; code < 1000; code++) {
        size_t n = 0;
        if (code == IMDS_CACHE_RESULT_PANIC) continue;
        if (code == IMDS_CACHE_RESULT_BUSY && getenv("IMDS_CACHE_TEST_NO_RACE")) continue;
        if (imds_cache_result_message(code, NULL, 0, &n) == IMDS_CACHE_RESULT_INVALID_ARGUMENT) continue;
        if (!seen[code]) {
            fprintf(stderr, "result code %u was never produced\n", (unsigned)code);
            missing++;
        }
    }
    CHECK(missing == 0);
    printf("test_capi: %d passed, %d failed\n", checks - failures, failures);
    return failures == 0 ? 0 : 1;
}
