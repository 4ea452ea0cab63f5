/* Allocator stress test for the runtime's libc shim, run as a hostcheck executable.
 * Random malloc/calloc/realloc/free over 512 slots; every block carries a pattern that is
 * verified before it is freed or resized, calloc memory must read zero, and at the end the whole
 * heap must be reusable for one large block (freed blocks merge back). Prints "ok" on success. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"

#define SLOTS 512
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static unsigned char *ptr[SLOTS];
static size_t len[SLOTS];

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int fail(const char *message) {
    keep_platform_console_write(1, message, strlen(message));
    return 1;
}

static void fill(int i, size_t from) {
    for (size_t j = from; j < len[i]; j++) {
        ptr[i][j] = (unsigned char)(i * 7 + j);
    }
}

static int intact(int i, size_t n) {
    for (size_t j = 0; j < n; j++) {
        if (ptr[i][j] != (unsigned char)(i * 7 + j)) {
            return 0;
        }
    }
    return 1;
}

static size_t random_size(void) { return next() % 16 == 0 ? next() % 300000 : next() % 300; }

int keep_app_run(void) {
    for (int round = 0; round < 60000; round++) {
        int i = (int)(next() % SLOTS);
        if (ptr[i] != NULL) {
            if (!intact(i, len[i])) {
                return fail("a block was corrupted\n");
            }
            if (next() % 2) {
                free(ptr[i]);
                ptr[i] = NULL;
                continue;
            }
            size_t n = random_size();
            unsigned char *p = realloc(ptr[i], n);
            if (p == NULL) {
                if (n == 0) {
                    ptr[i] = NULL;
                    continue;
                }
                return fail("realloc failed\n");
            }
            size_t kept = n < len[i] ? n : len[i];
            ptr[i] = p;
            if (!intact(i, kept)) {
                return fail("realloc lost data\n");
            }
            len[i] = n;
            fill(i, kept);
        } else {
            size_t n = random_size();
            int zeroed = next() % 4 == 0;
            ptr[i] = zeroed ? calloc(n, 1) : malloc(n);
            if (ptr[i] == NULL) {
                return fail("allocation failed\n");
            }
            if (((uintptr_t)ptr[i] & 15) != 0) {
                return fail("misaligned block\n");
            }
            for (size_t j = 0; zeroed && j < n; j++) {
                if (ptr[i][j] != 0) {
                    return fail("calloc memory is not zero\n");
                }
            }
            len[i] = n;
            fill(i, 0);
        }
    }
    for (int i = 0; i < SLOTS; i++) {
        if (ptr[i] != NULL && !intact(i, len[i])) {
            return fail("a block was corrupted\n");
        }
        free(ptr[i]);
    }
    void *big = malloc(200u << 20);
    if (big == NULL) {
        return fail("freed memory did not merge back\n");
    }
    free(big);
    if (malloc((size_t)1 << 40) != NULL) {
        return fail("an impossible allocation succeeded\n");
    }
    return fail("ok\n") - 1;
}
