/* AES-256-GCM for ring 0 (see aes_gcm.h for the contract).
 *
 * Written for this machine's emulated ring 0 (about 0.65 µs per instruction, no SSE): AES with
 * the 256-byte S-box and MixColumns computed on 32-bit columns, GHASH bit by bit with masks.
 * The same shape as Linux's lib/crypto/aes.c and gf128mul_lle, which the sev-guest driver uses for
 * these messages: the S-box is the only table, and it is read whole before every block so that
 * which of its cache lines a lookup touches says nothing about the key (as lib/crypto/aes.c
 * does); GHASH has no table and no data-dependent branch. About 4,000 instructions per block. */
#include "aes_gcm.h"

static const uint8_t aes_sbox[256] __attribute__((aligned(64))) = {
    0x63, 0x7c, 0x77, 0x7b, 0xf2, 0x6b, 0x6f, 0xc5, 0x30, 0x01, 0x67, 0x2b, 0xfe, 0xd7, 0xab, 0x76,
    0xca, 0x82, 0xc9, 0x7d, 0xfa, 0x59, 0x47, 0xf0, 0xad, 0xd4, 0xa2, 0xaf, 0x9c, 0xa4, 0x72, 0xc0,
    0xb7, 0xfd, 0x93, 0x26, 0x36, 0x3f, 0xf7, 0xcc, 0x34, 0xa5, 0xe5, 0xf1, 0x71, 0xd8, 0x31, 0x15,
    0x04, 0xc7, 0x23, 0xc3, 0x18, 0x96, 0x05, 0x9a, 0x07, 0x12, 0x80, 0xe2, 0xeb, 0x27, 0xb2, 0x75,
    0x09, 0x83, 0x2c, 0x1a, 0x1b, 0x6e, 0x5a, 0xa0, 0x52, 0x3b, 0xd6, 0xb3, 0x29, 0xe3, 0x2f, 0x84,
    0x53, 0xd1, 0x00, 0xed, 0x20, 0xfc, 0xb1, 0x5b, 0x6a, 0xcb, 0xbe, 0x39, 0x4a, 0x4c, 0x58, 0xcf,
    0xd0, 0xef, 0xaa, 0xfb, 0x43, 0x4d, 0x33, 0x85, 0x45, 0xf9, 0x02, 0x7f, 0x50, 0x3c, 0x9f, 0xa8,
    0x51, 0xa3, 0x40, 0x8f, 0x92, 0x9d, 0x38, 0xf5, 0xbc, 0xb6, 0xda, 0x21, 0x10, 0xff, 0xf3, 0xd2,
    0xcd, 0x0c, 0x13, 0xec, 0x5f, 0x97, 0x44, 0x17, 0xc4, 0xa7, 0x7e, 0x3d, 0x64, 0x5d, 0x19, 0x73,
    0x60, 0x81, 0x4f, 0xdc, 0x22, 0x2a, 0x90, 0x88, 0x46, 0xee, 0xb8, 0x14, 0xde, 0x5e, 0x0b, 0xdb,
    0xe0, 0x32, 0x3a, 0x0a, 0x49, 0x06, 0x24, 0x5c, 0xc2, 0xd3, 0xac, 0x62, 0x91, 0x95, 0xe4, 0x79,
    0xe7, 0xc8, 0x37, 0x6d, 0x8d, 0xd5, 0x4e, 0xa9, 0x6c, 0x56, 0xf4, 0xea, 0x65, 0x7a, 0xae, 0x08,
    0xba, 0x78, 0x25, 0x2e, 0x1c, 0xa6, 0xb4, 0xc6, 0xe8, 0xdd, 0x74, 0x1f, 0x4b, 0xbd, 0x8b, 0x8a,
    0x70, 0x3e, 0xb5, 0x66, 0x48, 0x03, 0xf6, 0x0e, 0x61, 0x35, 0x57, 0xb9, 0x86, 0xc1, 0x1d, 0x9e,
    0xe1, 0xf8, 0x98, 0x11, 0x69, 0xd9, 0x8e, 0x94, 0x9b, 0x1e, 0x87, 0xe9, 0xce, 0x55, 0x28, 0xdf,
    0x8c, 0xa1, 0x89, 0x0d, 0xbf, 0xe6, 0x42, 0x68, 0x41, 0x99, 0x2d, 0x0f, 0xb0, 0x54, 0xbb, 0x16,
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

/* Touch every cache line of the S-box, so that the lookups that follow all hit. */
static void prefetch_sbox(void) {
    const volatile uint8_t *table = aes_sbox;
    for (int i = 0; i < 256; i += 64) {
        (void)table[i];
    }
}

static uint32_t sub_word(uint32_t w) {
    return (uint32_t)aes_sbox[w & 0xff] | (uint32_t)aes_sbox[(w >> 8) & 0xff] << 8 |
           (uint32_t)aes_sbox[(w >> 16) & 0xff] << 16 | (uint32_t)aes_sbox[w >> 24] << 24;
}

/* MixColumns of one column (bytes a0..a3 from the low byte up): b0 = 2a0 ^ 3a1 ^ a2 ^ a3 ... */
static uint32_t mix_column(uint32_t w) {
    uint32_t t = w ^ ror32(w, 8);
    uint32_t doubled = ((t & 0x7f7f7f7fu) << 1) ^ (((t >> 7) & 0x01010101u) * 0x1b);
    return doubled ^ ror32(w, 8) ^ ror32(w, 16) ^ ror32(w, 24);
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

static void aes256_encrypt(const uint32_t rk[60], const uint8_t in[16], uint8_t out[16]) {
    uint32_t s[4], t[4];
    prefetch_sbox();
    for (int c = 0; c < 4; c++) {
        s[c] = load32_le(in + 4 * c) ^ rk[c];
    }
    for (int round = 1; round <= 14; round++) {
        for (int c = 0; c < 4; c++) {
            /* SubBytes and ShiftRows: row r of column c comes from column c + r. */
            t[c] = (uint32_t)aes_sbox[s[c] & 0xff] |
                   (uint32_t)aes_sbox[(s[(c + 1) & 3] >> 8) & 0xff] << 8 |
                   (uint32_t)aes_sbox[(s[(c + 2) & 3] >> 16) & 0xff] << 16 |
                   (uint32_t)aes_sbox[s[(c + 3) & 3] >> 24] << 24;
        }
        for (int c = 0; c < 4; c++) {
            s[c] = (round < 14 ? mix_column(t[c]) : t[c]) ^ rk[4 * round + c];
        }
    }
    for (int c = 0; c < 4; c++) {
        store32_le(out + 4 * c, s[c]);
    }
}

/* X = X * H in GF(2^128) with GCM's bit order (NIST SP 800-38D, algorithm 1), without branches. */
static void gf_mul(uint64_t *x_hi, uint64_t *x_lo, uint64_t h_hi, uint64_t h_lo) {
    uint64_t z_hi = 0, z_lo = 0, v_hi = h_hi, v_lo = h_lo;
    uint64_t x[2] = {*x_hi, *x_lo};
    for (int half = 0; half < 2; half++) {
        uint64_t bits = x[half];
        for (int i = 0; i < 64; i++) {
            uint64_t take = 0 - (bits >> 63);
            uint64_t carry = 0 - (v_lo & 1);
            z_hi ^= v_hi & take;
            z_lo ^= v_lo & take;
            v_lo = (v_lo >> 1) | (v_hi << 63);
            v_hi = (v_hi >> 1) ^ (0xe100000000000000ull & carry);
            bits <<= 1;
        }
    }
    *x_hi = z_hi;
    *x_lo = z_lo;
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
