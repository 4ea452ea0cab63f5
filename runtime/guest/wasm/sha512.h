/* SHA-512 (FIPS 180-4): the digest the keep computes over its preopened trees. */
#ifndef KEEP_SHA512_H
#define KEEP_SHA512_H

#include <stddef.h>
#include <stdint.h>

#define SHA512_DIGEST_SIZE 64

struct sha512 {
    uint64_t state[8];
    uint64_t length; /* bytes hashed so far (messages here are far below 2^61 bytes) */
    uint8_t block[128];
    size_t used;
};

void sha512_init(struct sha512 *h);
void sha512_update(struct sha512 *h, const void *data, size_t len);
void sha512_final(struct sha512 *h, uint8_t out[SHA512_DIGEST_SIZE]);

#endif
