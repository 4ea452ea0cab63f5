/* SHA-256 of fixed buffers: the empty string, "abc", the FIPS 180-2 two-block message, a
 * million 'a's, and 1 MiB of a byte pattern fed in odd-sized pieces. */
#include <stdio.h>
#include <string.h>

#include "sha256.h"

static void print_digest(const char *name, const void *data, size_t n) {
    struct sha256 s;
    unsigned char digest[32];
    char hex[65];
    sha256_init(&s);
    sha256_update(&s, data, n);
    sha256_final(&s, digest);
    sha256_hex(digest, hex);
    printf("%s %s\n", hex, name);
}

static unsigned char buffer[1 << 20];

int main(void) {
    print_digest("empty", "", 0);
    print_digest("abc", "abc", 3);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    print_digest("two-block", two, strlen(two));
    memset(buffer, 'a', 1000000);
    print_digest("million-a", buffer, 1000000);
    for (size_t i = 0; i < sizeof buffer; i++) {
        buffer[i] = (unsigned char)(i * 131 + (i >> 8));
    }
    struct sha256 s;
    unsigned char digest[32];
    char hex[65];
    sha256_init(&s);
    size_t step = 1;
    for (size_t at = 0; at < sizeof buffer; step = step * 3 % 997 + 1) {
        size_t take = sizeof buffer - at < step ? sizeof buffer - at : step;
        sha256_update(&s, buffer + at, take);
        at += take;
    }
    sha256_final(&s, digest);
    sha256_hex(digest, hex);
    printf("%s pattern-1MiB\n", hex);
    return 0;
}
