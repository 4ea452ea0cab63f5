/* Line-oriented I/O for the host harnesses of ring-0 code (no libc: raw Linux syscalls). Each
 * harness defines harness_line(), called with a pointer to every input line's first byte; hex
 * fields are lowercase, "-" for empty. Output is written in one go at the end. */
#ifndef KEEP_HARNESS_IO_H
#define KEEP_HARNESS_IO_H
#include <stddef.h>
#include <stdint.h>

#define MAX_FIELD 8192

static __attribute__((unused)) long sys3(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return ret;
}

static uint8_t input[1 << 22];
static char output[1 << 22];
static size_t out_len;

static __attribute__((unused)) void put(const char *s, size_t n) {
    for (size_t i = 0; i < n && out_len < sizeof output; i++) {
        output[out_len++] = s[i];
    }
}

static __attribute__((unused)) void put_str(const char *s) {
    size_t n = 0;
    while (s[n] != 0) {
        n++;
    }
    put(s, n);
}

static __attribute__((unused)) void put_hex(const volatile uint8_t *data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    if (n == 0) {
        put("-", 1);
    }
    for (size_t i = 0; i < n; i++) {
        char pair[2] = {digits[data[i] >> 4], digits[data[i] & 15]};
        put(pair, 2);
    }
}

static __attribute__((unused)) void put_u64(uint64_t x) {
    uint8_t be[8];
    for (int i = 7; i >= 0; i--) {
        be[i] = (uint8_t)x;
        x >>= 8;
    }
    put_hex(be, 8);
}

static __attribute__((unused)) int nibble(uint8_t c) {
    return c >= 'a' ? c - 'a' + 10 : c - '0';
}

/* Parse one hex field at *at into out; returns its length in bytes. */
static __attribute__((unused)) size_t field(const uint8_t **at, uint8_t *out) {
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

static __attribute__((unused)) void harness_line(const uint8_t *line);

__attribute__((noreturn)) void _start(void) {
    size_t have = 0;
    long got;
    while ((got = sys3(0, 0, (long)(input + have), (long)(sizeof input - 1 - have))) > 0) {
        have += (size_t)got;
    }
    for (const uint8_t *at = input; *at != 0;) {
        harness_line(at);
        put("\n", 1);
        while (*at != '\n' && *at != 0) {
            at++;
        }
        if (*at != 0) {
            at++;
        }
    }
    sys3(1, 1, (long)output, (long)out_len);
    sys3(60, 0, 0, 0);
    __builtin_unreachable();
}

#endif
