/* Host harness for runtime/guest/ukernel/aes_gcm.c (tests/test_ukernel_gcm.py): the ring-0 object,
 * linked into a static Linux executable without libc (raw syscalls), answers one request a line:
 *   E KEY IV AAD PT        ->  CT TAG
 *   D KEY IV AAD CT TAG    ->  PT, or FAIL (and the output buffer is checked untouched)
 * every field lowercase hex, "-" for empty. */
#include <stddef.h>
#include <stdint.h>

#include "aes_gcm.h"

#define MAX_FIELD 8192

static long sys3(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static uint8_t input[1 << 22];
static char output[1 << 22];
static size_t out_len;

static void put(const char *s, size_t n) {
    for (size_t i = 0; i < n && out_len < sizeof output; i++) {
        output[out_len++] = s[i];
    }
}

static void put_hex(const uint8_t *data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    if (n == 0) {
        put("-", 1);
    }
    for (size_t i = 0; i < n; i++) {
        char pair[2] = {digits[data[i] >> 4], digits[data[i] & 15]};
        put(pair, 2);
    }
}

static int nibble(uint8_t c) {
    return c >= 'a' ? c - 'a' + 10 : c - '0';
}

/* Parse one hex field at *at into out; returns its length in bytes. */
static size_t field(const uint8_t **at, uint8_t *out) {
    const uint8_t *p = *at;
    size_t n = 0;
    while (*p == ' ') {
        p++;
    }
    if (*p == '-') {
        p++;
    }
    while (*p != ' ' && *p != '\n' && *p != 0 && n < MAX_FIELD) {
        out[n++] = (uint8_t)(nibble(p[0]) << 4 | nibble(p[1]));
        p += 2;
    }
    *at = p;
    return n;
}

static uint8_t key[MAX_FIELD], iv[MAX_FIELD], aad[MAX_FIELD], text[MAX_FIELD], tag[MAX_FIELD];
static uint8_t result[MAX_FIELD], computed_tag[KEEP_GCM_TAG_SIZE];

static void one(const uint8_t **at) {
    uint8_t op = **at;
    (*at)++;
    field(at, key);
    field(at, iv);
    size_t aad_len = field(at, aad);
    size_t len = field(at, text);
    struct keep_gcm gcm;
    keep_gcm_init(&gcm, key);
    if (op == 'E') {
        keep_gcm_seal(&gcm, iv, aad, aad_len, text, len, result, computed_tag);
        put_hex(result, len);
        put(" ", 1);
        put_hex(computed_tag, KEEP_GCM_TAG_SIZE);
    } else {
        field(at, tag);
        for (size_t i = 0; i < len; i++) {
            result[i] = 0xA5;
        }
        if (keep_gcm_open(&gcm, iv, aad, aad_len, text, len, tag, result) == 0) {
            put_hex(result, len);
        } else {
            int touched = 0;
            for (size_t i = 0; i < len; i++) {
                touched |= result[i] != 0xA5;
            }
            put(touched ? "FAIL-WROTE" : "FAIL", touched ? 10 : 4);
        }
    }
    keep_gcm_wipe(&gcm);
    for (size_t i = 0; i < sizeof gcm; i++) {
        if (((const uint8_t *)&gcm)[i] != 0) {
            put(" NOT-WIPED", 10);
            break;
        }
    }
    put("\n", 1);
    while (**at != '\n' && **at != 0) {
        (*at)++;
    }
}

__attribute__((noreturn)) void _start(void) {
    size_t have = 0;
    long got;
    while ((got = sys3(0, 0, (long)(input + have), (long)(sizeof input - 1 - have))) > 0) {
        have += (size_t)got;
    }
    const uint8_t *at = input;
    while (*at != 0) {
        if (*at == 'E' || *at == 'D') {
            one(&at);
        }
        if (*at != 0) {
            at++;
        }
    }
    sys3(1, 1, (long)output, (long)out_len);
    sys3(60, 0, 0, 0);
    __builtin_unreachable();
}
