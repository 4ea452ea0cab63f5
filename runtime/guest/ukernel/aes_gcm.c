/* AES-256-GCM for ring 0 (see aes_gcm.h for the contract).
 *
 * Written for this machine's emulated ring 0 (about 0.65 µs per instruction, no SSE): AES with one
 * 1 KiB T-table, read whole before every block so that which of its cache lines a lookup touches
 * says nothing about the key (the defence of Linux's lib/crypto/aes.c, which the sev-guest driver
 * uses for these messages); GHASH by carry-less multiplication in integer multiplies, with no
 * table and no data-dependent branch. About 1,500 instructions per 16-byte block. */
#include "aes_gcm.h"

/* The AES T-table: for input byte x, the MixColumns column of S(x) in row 0, packed
 * little-endian: 2·S(x) | S(x) << 8 | S(x) << 16 | 3·S(x) << 24. Rows 1..3 are its rotations, and
 * byte 1 is S(x) itself (the last round and the key schedule). 1 KiB, 16 cache lines. */
static const uint32_t aes_te[256] __attribute__((aligned(64))) = {
    0xa56363c6, 0x847c7cf8, 0x997777ee, 0x8d7b7bf6, 0x0df2f2ff, 0xbd6b6bd6, 0xb16f6fde, 0x54c5c591,
    0x50303060, 0x03010102, 0xa96767ce, 0x7d2b2b56, 0x19fefee7, 0x62d7d7b5, 0xe6abab4d, 0x9a7676ec,
    0x45caca8f, 0x9d82821f, 0x40c9c989, 0x877d7dfa, 0x15fafaef, 0xeb5959b2, 0xc947478e, 0x0bf0f0fb,
    0xecadad41, 0x67d4d4b3, 0xfda2a25f, 0xeaafaf45, 0xbf9c9c23, 0xf7a4a453, 0x967272e4, 0x5bc0c09b,
    0xc2b7b775, 0x1cfdfde1, 0xae93933d, 0x6a26264c, 0x5a36366c, 0x413f3f7e, 0x02f7f7f5, 0x4fcccc83,
    0x5c343468, 0xf4a5a551, 0x34e5e5d1, 0x08f1f1f9, 0x937171e2, 0x73d8d8ab, 0x53313162, 0x3f15152a,
    0x0c040408, 0x52c7c795, 0x65232346, 0x5ec3c39d, 0x28181830, 0xa1969637, 0x0f05050a, 0xb59a9a2f,
    0x0907070e, 0x36121224, 0x9b80801b, 0x3de2e2df, 0x26ebebcd, 0x6927274e, 0xcdb2b27f, 0x9f7575ea,
    0x1b090912, 0x9e83831d, 0x742c2c58, 0x2e1a1a34, 0x2d1b1b36, 0xb26e6edc, 0xee5a5ab4, 0xfba0a05b,
    0xf65252a4, 0x4d3b3b76, 0x61d6d6b7, 0xceb3b37d, 0x7b292952, 0x3ee3e3dd, 0x712f2f5e, 0x97848413,
    0xf55353a6, 0x68d1d1b9, 0x00000000, 0x2cededc1, 0x60202040, 0x1ffcfce3, 0xc8b1b179, 0xed5b5bb6,
    0xbe6a6ad4, 0x46cbcb8d, 0xd9bebe67, 0x4b393972, 0xde4a4a94, 0xd44c4c98, 0xe85858b0, 0x4acfcf85,
    0x6bd0d0bb, 0x2aefefc5, 0xe5aaaa4f, 0x16fbfbed, 0xc5434386, 0xd74d4d9a, 0x55333366, 0x94858511,
    0xcf45458a, 0x10f9f9e9, 0x06020204, 0x817f7ffe, 0xf05050a0, 0x443c3c78, 0xba9f9f25, 0xe3a8a84b,
    0xf35151a2, 0xfea3a35d, 0xc0404080, 0x8a8f8f05, 0xad92923f, 0xbc9d9d21, 0x48383870, 0x04f5f5f1,
    0xdfbcbc63, 0xc1b6b677, 0x75dadaaf, 0x63212142, 0x30101020, 0x1affffe5, 0x0ef3f3fd, 0x6dd2d2bf,
    0x4ccdcd81, 0x140c0c18, 0x35131326, 0x2fececc3, 0xe15f5fbe, 0xa2979735, 0xcc444488, 0x3917172e,
    0x57c4c493, 0xf2a7a755, 0x827e7efc, 0x473d3d7a, 0xac6464c8, 0xe75d5dba, 0x2b191932, 0x957373e6,
    0xa06060c0, 0x98818119, 0xd14f4f9e, 0x7fdcdca3, 0x66222244, 0x7e2a2a54, 0xab90903b, 0x8388880b,
    0xca46468c, 0x29eeeec7, 0xd3b8b86b, 0x3c141428, 0x79dedea7, 0xe25e5ebc, 0x1d0b0b16, 0x76dbdbad,
    0x3be0e0db, 0x56323264, 0x4e3a3a74, 0x1e0a0a14, 0xdb494992, 0x0a06060c, 0x6c242448, 0xe45c5cb8,
    0x5dc2c29f, 0x6ed3d3bd, 0xefacac43, 0xa66262c4, 0xa8919139, 0xa4959531, 0x37e4e4d3, 0x8b7979f2,
    0x32e7e7d5, 0x43c8c88b, 0x5937376e, 0xb76d6dda, 0x8c8d8d01, 0x64d5d5b1, 0xd24e4e9c, 0xe0a9a949,
    0xb46c6cd8, 0xfa5656ac, 0x07f4f4f3, 0x25eaeacf, 0xaf6565ca, 0x8e7a7af4, 0xe9aeae47, 0x18080810,
    0xd5baba6f, 0x887878f0, 0x6f25254a, 0x722e2e5c, 0x241c1c38, 0xf1a6a657, 0xc7b4b473, 0x51c6c697,
    0x23e8e8cb, 0x7cdddda1, 0x9c7474e8, 0x211f1f3e, 0xdd4b4b96, 0xdcbdbd61, 0x868b8b0d, 0x858a8a0f,
    0x907070e0, 0x423e3e7c, 0xc4b5b571, 0xaa6666cc, 0xd8484890, 0x05030306, 0x01f6f6f7, 0x120e0e1c,
    0xa36161c2, 0x5f35356a, 0xf95757ae, 0xd0b9b969, 0x91868617, 0x58c1c199, 0x271d1d3a, 0xb99e9e27,
    0x38e1e1d9, 0x13f8f8eb, 0xb398982b, 0x33111122, 0xbb6969d2, 0x70d9d9a9, 0x898e8e07, 0xa7949433,
    0xb69b9b2d, 0x221e1e3c, 0x92878715, 0x20e9e9c9, 0x49cece87, 0xff5555aa, 0x78282850, 0x7adfdfa5,
    0x8f8c8c03, 0xf8a1a159, 0x80898909, 0x170d0d1a, 0xdabfbf65, 0x31e6e6d7, 0xc6424284, 0xb86868d0,
    0xc3414182, 0xb0999929, 0x772d2d5a, 0x110f0f1e, 0xcbb0b07b, 0xfc5454a8, 0xd6bbbb6d, 0x3a16162c,
};

static uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static uint32_t load32_le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void store32_le(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)(x >> 8);
    p[2] = (uint8_t)(x >> 16);
    p[3] = (uint8_t)(x >> 24);
}

static uint64_t load64_be(const uint8_t *p) {
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) {
        x = x << 8 | p[i];
    }
    return x;
}

static void store64_be(uint8_t *p, uint64_t x) {
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)x;
        x >>= 8;
    }
}

/* Touch every cache line of the table, so that the lookups that follow all hit. */
static void prefetch_table(void) {
    const volatile uint32_t *table = aes_te;
    for (int i = 0; i < 256; i += 16) {
        (void)table[i];
    }
}

static uint32_t sbox(uint32_t x) { return (aes_te[x & 0xff] >> 8) & 0xff; }

static uint32_t sub_word(uint32_t w) {
    return sbox(w) | sbox(w >> 8) << 8 | sbox(w >> 16) << 16 | sbox(w >> 24) << 24;
}

static void aes256_expand(uint32_t rk[60], const uint8_t key[KEEP_GCM_KEY_SIZE]) {
    uint32_t rcon = 1;
    for (int i = 0; i < 8; i++) {
        rk[i] = load32_le(key + 4 * i);
    }
    for (int i = 8; i < 60; i++) {
        uint32_t t = rk[i - 1];
        if (i % 8 == 0) {
            t = sub_word(ror32(t, 8)) ^ rcon;
            rcon = (rcon << 1) ^ ((rcon >> 7) * 0x11b);
        } else if (i % 8 == 4) {
            t = sub_word(t);
        }
        rk[i] = rk[i - 8] ^ t;
    }
}

/* Row r of output column c comes from input column c + r (ShiftRows); the T-table does
 * SubBytes and MixColumns, a rotation by 8r places row r. */
#define AES_ROUND(s, c, rk)                                                                   \
    (aes_te[(s)[(c)] & 0xff] ^ ror32(aes_te[((s)[((c) + 1) & 3] >> 8) & 0xff], 24) ^          \
     ror32(aes_te[((s)[((c) + 2) & 3] >> 16) & 0xff], 16) ^                                  \
     ror32(aes_te[(s)[((c) + 3) & 3] >> 24], 8) ^ (rk))
#define AES_LAST(s, c, rk)                                                                    \
    ((sbox((s)[(c)]) | sbox((s)[((c) + 1) & 3] >> 8) << 8 |                                  \
      sbox((s)[((c) + 2) & 3] >> 16) << 16 | sbox((s)[((c) + 3) & 3] >> 24) << 24) ^ (rk))

static void aes256_encrypt(const uint32_t rk[60], const uint8_t in[16], uint8_t out[16]) {
    uint32_t s[4], t[4];
    prefetch_table();
    for (int c = 0; c < 4; c++) {
        s[c] = load32_le(in + 4 * c) ^ rk[c];
    }
    for (int round = 1; round < 14; round++) {
        const uint32_t *k = rk + 4 * round;
        t[0] = AES_ROUND(s, 0, k[0]);
        t[1] = AES_ROUND(s, 1, k[1]);
        t[2] = AES_ROUND(s, 2, k[2]);
        t[3] = AES_ROUND(s, 3, k[3]);
        for (int c = 0; c < 4; c++) {
            s[c] = t[c];
        }
    }
    for (int c = 0; c < 4; c++) {
        store32_le(out + 4 * c, AES_LAST(s, c, rk[56 + c]));
    }
}

/* Carry-less multiplication, low 64 bits, with integer multiplies whose carries are kept out
 * of the bits that matter by 4-bit holes (T. Pornin's "ctmul64", BearSSL): constant time, no
 * table, about 40 instructions where a bit-by-bit loop needs 1,000. */
static uint64_t bmul64(uint64_t x, uint64_t y) {
    const uint64_t m0 = 0x1111111111111111ull, m1 = m0 << 1, m2 = m0 << 2, m3 = m0 << 3;
    uint64_t x0 = x & m0, x1 = x & m1, x2 = x & m2, x3 = x & m3;
    uint64_t y0 = y & m0, y1 = y & m1, y2 = y & m2, y3 = y & m3;
    uint64_t z0 = (x0 * y0) ^ (x1 * y3) ^ (x2 * y2) ^ (x3 * y1);
    uint64_t z1 = (x0 * y1) ^ (x1 * y0) ^ (x2 * y3) ^ (x3 * y2);
    uint64_t z2 = (x0 * y2) ^ (x1 * y1) ^ (x2 * y0) ^ (x3 * y3);
    uint64_t z3 = (x0 * y3) ^ (x1 * y2) ^ (x2 * y1) ^ (x3 * y0);
    return (z0 & m0) | (z1 & m1) | (z2 & m2) | (z3 & m3);
}

static uint64_t rev64(uint64_t x) {
    x = ((x & 0x5555555555555555ull) << 1) | ((x >> 1) & 0x5555555555555555ull);
    x = ((x & 0x3333333333333333ull) << 2) | ((x >> 2) & 0x3333333333333333ull);
    x = ((x & 0x0F0F0F0F0F0F0F0Full) << 4) | ((x >> 4) & 0x0F0F0F0F0F0F0F0Full);
    x = ((x & 0x00FF00FF00FF00FFull) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFull);
    x = ((x & 0x0000FFFF0000FFFFull) << 16) | ((x >> 16) & 0x0000FFFF0000FFFFull);
    return (x << 32) | (x >> 32);
}

/* X = X * H in GF(2^128) with GCM's reflected bit order (NIST SP 800-38D): a Karatsuba
 * product of the 64-bit halves (the high halves through bit-reversed operands), shifted by one
 * for the reflection, then reduced modulo x^128 + x^7 + x^2 + x + 1. */
static void gf_mul(uint64_t *x_hi, uint64_t *x_lo, uint64_t h_hi, uint64_t h_lo) {
    uint64_t y1 = *x_hi, y0 = *x_lo;
    uint64_t y0r = rev64(y0), y1r = rev64(y1), h0r = rev64(h_lo), h1r = rev64(h_hi);
    uint64_t z0 = bmul64(y0, h_lo), z1 = bmul64(y1, h_hi), z2 = bmul64(y0 ^ y1, h_lo ^ h_hi);
    uint64_t z0h = bmul64(y0r, h0r), z1h = bmul64(y1r, h1r);
    uint64_t z2h = bmul64(y0r ^ y1r, h0r ^ h1r);
    z2 ^= z0 ^ z1;
    z2h ^= z0h ^ z1h;
    z0h = rev64(z0h) >> 1;
    z1h = rev64(z1h) >> 1;
    z2h = rev64(z2h) >> 1;
    uint64_t v0 = z0, v1 = z0h ^ z2, v2 = z1 ^ z2h, v3 = z1h;
    v3 = (v3 << 1) | (v2 >> 63);
    v2 = (v2 << 1) | (v1 >> 63);
    v1 = (v1 << 1) | (v0 >> 63);
    v0 = v0 << 1;
    v2 ^= v0 ^ (v0 >> 1) ^ (v0 >> 2) ^ (v0 >> 7);
    v1 ^= (v0 << 63) ^ (v0 << 62) ^ (v0 << 57);
    v3 ^= v1 ^ (v1 >> 1) ^ (v1 >> 2) ^ (v1 >> 7);
    v2 ^= (v1 << 63) ^ (v1 << 62) ^ (v1 << 57);
    *x_hi = v3;
    *x_lo = v2;
}

struct ghash {
    uint64_t hi, lo;
};

/* Absorb data, zero-padded to whole blocks. */
static void ghash_update(struct ghash *g, const struct keep_gcm *gcm, const uint8_t *data,
                         size_t len) {
    while (len > 0) {
        uint8_t block[16];
        size_t n = len < 16 ? len : 16;
        for (size_t i = 0; i < 16; i++) {
            block[i] = i < n ? data[i] : 0;
        }
        g->hi ^= load64_be(block);
        g->lo ^= load64_be(block + 8);
        gf_mul(&g->hi, &g->lo, gcm->h_hi, gcm->h_lo);
        data += n;
        len -= n;
    }
}

/* The tag: E(K, J0) ^ GHASH(H, A, C), with J0 = IV || 0^31 || 1. */
static void gcm_tag(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                    const uint8_t *aad, size_t aad_len, const uint8_t *ciphertext, size_t len,
                    uint8_t tag[KEEP_GCM_TAG_SIZE]) {
    struct ghash g = {0, 0};
    uint8_t block[16];
    ghash_update(&g, gcm, aad, aad_len);
    ghash_update(&g, gcm, ciphertext, len);
    g.hi ^= (uint64_t)aad_len * 8;
    g.lo ^= (uint64_t)len * 8;
    gf_mul(&g.hi, &g.lo, gcm->h_hi, gcm->h_lo);
    for (int i = 0; i < 12; i++) {
        block[i] = iv[i];
    }
    store32_le(block + 12, 0x01000000u); /* counter 1, big-endian */
    aes256_encrypt(gcm->round_key, block, tag);
    store64_be(block, g.hi);
    store64_be(block + 8, g.lo);
    for (int i = 0; i < 16; i++) {
        tag[i] ^= block[i];
    }
}

/* CTR mode from counter 2 (GCM's inc32 of J0); in and out may be the same buffer. */
static void gcm_ctr(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                    const uint8_t *in, size_t len, uint8_t *out) {
    uint8_t counter[16], stream[16];
    uint32_t n = 2;
    for (int i = 0; i < 12; i++) {
        counter[i] = iv[i];
    }
    for (size_t at = 0; at < len; at += 16, n++) {
        counter[12] = (uint8_t)(n >> 24);
        counter[13] = (uint8_t)(n >> 16);
        counter[14] = (uint8_t)(n >> 8);
        counter[15] = (uint8_t)n;
        aes256_encrypt(gcm->round_key, counter, stream);
        for (size_t i = 0; i < 16 && at + i < len; i++) {
            out[at + i] = in[at + i] ^ stream[i];
        }
    }
    keep_wipe(stream, sizeof stream);
}

void keep_gcm_init(struct keep_gcm *gcm, const uint8_t key[KEEP_GCM_KEY_SIZE]) {
    uint8_t zero[16], h[16];
    for (int i = 0; i < 16; i++) {
        zero[i] = 0;
    }
    aes256_expand(gcm->round_key, key);
    aes256_encrypt(gcm->round_key, zero, h);
    gcm->h_hi = load64_be(h);
    gcm->h_lo = load64_be(h + 8);
    keep_wipe(h, sizeof h);
}

void keep_gcm_seal(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                   const uint8_t *aad, size_t aad_len, const uint8_t *plaintext, size_t len,
                   uint8_t *ciphertext, uint8_t tag[KEEP_GCM_TAG_SIZE]) {
    gcm_ctr(gcm, iv, plaintext, len, ciphertext);
    gcm_tag(gcm, iv, aad, aad_len, ciphertext, len, tag);
}

int keep_gcm_open(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                  const uint8_t *aad, size_t aad_len, const uint8_t *ciphertext, size_t len,
                  const uint8_t tag[KEEP_GCM_TAG_SIZE], uint8_t *plaintext) {
    uint8_t expected[KEEP_GCM_TAG_SIZE];
    uint8_t diff = 0;
    gcm_tag(gcm, iv, aad, aad_len, ciphertext, len, expected);
    for (int i = 0; i < KEEP_GCM_TAG_SIZE; i++) {
        diff |= expected[i] ^ tag[i]; /* every byte, whatever the first difference */
    }
    if (diff != 0) {
        return -1;
    }
    gcm_ctr(gcm, iv, ciphertext, len, plaintext);
    return 0;
}

void keep_wipe(void *buffer, size_t n) {
    volatile uint8_t *p = (volatile uint8_t *)buffer;
    for (size_t i = 0; i < n; i++) {
        p[i] = 0;
    }
}

void keep_gcm_wipe(struct keep_gcm *gcm) { keep_wipe(gcm, sizeof *gcm); }
