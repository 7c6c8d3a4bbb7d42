/*
 * Built against an installed library with pkg-config (dynamic and static, `make c-test`)
 * or an extracted release tarball through its .pc files (`make dist-check`): one token from the
 * emulator at argv[1] through the blocking call. With an argument `version=V`, the header's
 * IMDS_CACHE_VERSION, the library's imds_cache_version() and V must be the same text. Other
 * arguments are ignored (tests/c/run.sh appends the C tests' own).
 */
#include <imds_cache.h>

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    static uint8_t token[16384];
    imds_cache_config *config = NULL;
    imds_cache *cache = NULL;
    imds_cache_identity identity;
    const char *resource = "https://management.azure.com";
    size_t len = 0;
    uint64_t expires_on_s = 0;
    uint8_t version[64];
    size_t version_len = 0;
    imds_cache_result r;
    if (argc < 2) {
        fprintf(stderr, "usage: %s EMULATOR_URL [version=V] [...]\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *expected;
        if (strncmp(argv[i], "version=", strlen("version=")) != 0) {
            continue;
        }
        expected = argv[i] + strlen("version=");
        if (imds_cache_version(version, sizeof version, &version_len) != IMDS_CACHE_RESULT_OK) {
            fprintf(stderr, "smoke: imds_cache_version failed\n");
            return 1;
        }
        if (strcmp(IMDS_CACHE_VERSION, expected) != 0 || version_len != strlen(expected) ||
            memcmp(version, expected, version_len) != 0) {
            fprintf(stderr, "smoke: versions differ: header %s, library %.*s, expected %s\n",
                    IMDS_CACHE_VERSION, (int)version_len, (const char *)version, expected);
            return 1;
        }
    }
    if (imds_cache_config_new(&config) != IMDS_CACHE_RESULT_OK ||
        imds_cache_config_set_endpoint(config, IMDS_CACHE_FLAVOUR_IMDS, (const uint8_t *)argv[1],
                                       strlen(argv[1]), NULL, 0) != IMDS_CACHE_RESULT_OK ||
        imds_cache_new(config, &cache) != IMDS_CACHE_RESULT_OK) {
        fprintf(stderr, "smoke: cannot make the handle\n");
        return 1;
    }
    imds_cache_config_free(config);
    imds_cache_identity_system(&identity);
    r = imds_cache_get_token(cache, &identity, (const uint8_t *)resource, strlen(resource), token,
                             sizeof token, &len, &expires_on_s);
    imds_cache_free(cache);
    if (r != IMDS_CACHE_RESULT_OK || len == 0) {
        uint8_t msg[256];
        size_t n = 0;
        imds_cache_result_message(r, msg, sizeof msg, &n);
        fprintf(stderr, "smoke: %.*s\n", (int)n, (const char *)msg);
        return 1;
    }
    printf("smoke: imds_cache %s: a %zu-byte token, expires at %llu\n", IMDS_CACHE_VERSION, len,
           (unsigned long long)expires_on_s);
    return 0;
}
