/* AES-256-GCM for ring 0 (see aes_gcm.h for the contract).
 *
 * Written for this machine's emulated ring 0, whose cost model was measured (bench/README.md,
 * issue 15 "ring-0 AES-256-GCM"; bench/bench_vmm.py prints it): every instruction costs about
 * the same (~0.27 µs: a multiply as much as an add), a memory operand ~0.2 µs more, a
 * read-modify-write of memory 2.6 times an add; there is no SSE. So the code counts
 * instructions and memory accesses:
 *   AES: one 2 KiB T-table of 64-bit entries holding each 32-bit column twice, so that the
 *   32 bits at byte offset k of an entry ARE the column rotated by 8k bits: a lookup, its
 *   rotation and its XOR are one instruction. The table is read whole before every block, so
 *   that which of its cache lines a lookup touches says nothing about the key (the defence of
 *   Linux's lib/crypto/aes.c, which the sev-guest driver uses for these messages); it is still
 *   a table indexed by secret bytes, as the 1 KiB T-table before it was, and an observer of
 *   single cache lines who defeats the prefetch learns 5 bits of an index (8 entries a line)
 *   where the 1 KiB table gave 4: the same class of leak, not a new one.
 *   GHASH: carry-less multiplication in integer multiplies (no table, no data-dependent branch
 *   or address: constant time), with the key's operands (its halves, their XOR and their bit
 *   reversals) computed once per key.
 *   Data moves in words, blocks are never staged byte by byte.
 * About 780 instructions per AES block and 600 per GHASH block (cachegrind of the host harness;
 * before: 1,060 and 620, plus ~200 per block of byte loops around them). */
#include "aes_gcm.h"

/* The AES T-table: for input byte x, the MixColumns column of S(x) in row 0, packed
 * little-endian, T(x) = 2·S(x) | S(x) << 8 | S(x) << 16 | 3·S(x) << 24, stored twice in a 64-bit
 * entry (T(x) | T(x) << 32). The 32 bits at byte offset k are T(x) rotated right by 8k (row
 * 4 - k's column); byte 1 is S(x) itself (the last round and the key schedule). 2 KiB, 32 cache
 * lines. */
static const uint64_t aes_t[256] __attribute__((aligned(64))) = {
    0xa56363c6a56363c6, 0x847c7cf8847c7cf8, 0x997777ee997777ee, 0x8d7b7bf68d7b7bf6,
    0x0df2f2ff0df2f2ff, 0xbd6b6bd6bd6b6bd6, 0xb16f6fdeb16f6fde, 0x54c5c59154c5c591,
    0x5030306050303060, 0x0301010203010102, 0xa96767cea96767ce, 0x7d2b2b567d2b2b56,
    0x19fefee719fefee7, 0x62d7d7b562d7d7b5, 0xe6abab4de6abab4d, 0x9a7676ec9a7676ec,
    0x45caca8f45caca8f, 0x9d82821f9d82821f, 0x40c9c98940c9c989, 0x877d7dfa877d7dfa,
    0x15fafaef15fafaef, 0xeb5959b2eb5959b2, 0xc947478ec947478e, 0x0bf0f0fb0bf0f0fb,
    0xecadad41ecadad41, 0x67d4d4b367d4d4b3, 0xfda2a25ffda2a25f, 0xeaafaf45eaafaf45,
    0xbf9c9c23bf9c9c23, 0xf7a4a453f7a4a453, 0x967272e4967272e4, 0x5bc0c09b5bc0c09b,
    0xc2b7b775c2b7b775, 0x1cfdfde11cfdfde1, 0xae93933dae93933d, 0x6a26264c6a26264c,
    0x5a36366c5a36366c, 0x413f3f7e413f3f7e, 0x02f7f7f502f7f7f5, 0x4fcccc834fcccc83,
    0x5c3434685c343468, 0xf4a5a551f4a5a551, 0x34e5e5d134e5e5d1, 0x08f1f1f908f1f1f9,
    0x937171e2937171e2, 0x73d8d8ab73d8d8ab, 0x5331316253313162, 0x3f15152a3f15152a,
    0x0c0404080c040408, 0x52c7c79552c7c795, 0x6523234665232346, 0x5ec3c39d5ec3c39d,
    0x2818183028181830, 0xa1969637a1969637, 0x0f05050a0f05050a, 0xb59a9a2fb59a9a2f,
    0x0907070e0907070e, 0x3612122436121224, 0x9b80801b9b80801b, 0x3de2e2df3de2e2df,
    0x26ebebcd26ebebcd, 0x6927274e6927274e, 0xcdb2b27fcdb2b27f, 0x9f7575ea9f7575ea,
    0x1b0909121b090912, 0x9e83831d9e83831d, 0x742c2c58742c2c58, 0x2e1a1a342e1a1a34,
    0x2d1b1b362d1b1b36, 0xb26e6edcb26e6edc, 0xee5a5ab4ee5a5ab4, 0xfba0a05bfba0a05b,
    0xf65252a4f65252a4, 0x4d3b3b764d3b3b76, 0x61d6d6b761d6d6b7, 0xceb3b37dceb3b37d,
    0x7b2929527b292952, 0x3ee3e3dd3ee3e3dd, 0x712f2f5e712f2f5e, 0x9784841397848413,
    0xf55353a6f55353a6, 0x68d1d1b968d1d1b9, 0x0000000000000000, 0x2cededc12cededc1,
    0x6020204060202040, 0x1ffcfce31ffcfce3, 0xc8b1b179c8b1b179, 0xed5b5bb6ed5b5bb6,
    0xbe6a6ad4be6a6ad4, 0x46cbcb8d46cbcb8d, 0xd9bebe67d9bebe67, 0x4b3939724b393972,
    0xde4a4a94de4a4a94, 0xd44c4c98d44c4c98, 0xe85858b0e85858b0, 0x4acfcf854acfcf85,
    0x6bd0d0bb6bd0d0bb, 0x2aefefc52aefefc5, 0xe5aaaa4fe5aaaa4f, 0x16fbfbed16fbfbed,
    0xc5434386c5434386, 0xd74d4d9ad74d4d9a, 0x5533336655333366, 0x9485851194858511,
    0xcf45458acf45458a, 0x10f9f9e910f9f9e9, 0x0602020406020204, 0x817f7ffe817f7ffe,
    0xf05050a0f05050a0, 0x443c3c78443c3c78, 0xba9f9f25ba9f9f25, 0xe3a8a84be3a8a84b,
    0xf35151a2f35151a2, 0xfea3a35dfea3a35d, 0xc0404080c0404080, 0x8a8f8f058a8f8f05,
    0xad92923fad92923f, 0xbc9d9d21bc9d9d21, 0x4838387048383870, 0x04f5f5f104f5f5f1,
    0xdfbcbc63dfbcbc63, 0xc1b6b677c1b6b677, 0x75dadaaf75dadaaf, 0x6321214263212142,
    0x3010102030101020, 0x1affffe51affffe5, 0x0ef3f3fd0ef3f3fd, 0x6dd2d2bf6dd2d2bf,
    0x4ccdcd814ccdcd81, 0x140c0c18140c0c18, 0x3513132635131326, 0x2fececc32fececc3,
    0xe15f5fbee15f5fbe, 0xa2979735a2979735, 0xcc444488cc444488, 0x3917172e3917172e,
    0x57c4c49357c4c493, 0xf2a7a755f2a7a755, 0x827e7efc827e7efc, 0x473d3d7a473d3d7a,
    0xac6464c8ac6464c8, 0xe75d5dbae75d5dba, 0x2b1919322b191932, 0x957373e6957373e6,
    0xa06060c0a06060c0, 0x9881811998818119, 0xd14f4f9ed14f4f9e, 0x7fdcdca37fdcdca3,
    0x6622224466222244, 0x7e2a2a547e2a2a54, 0xab90903bab90903b, 0x8388880b8388880b,
    0xca46468cca46468c, 0x29eeeec729eeeec7, 0xd3b8b86bd3b8b86b, 0x3c1414283c141428,
    0x79dedea779dedea7, 0xe25e5ebce25e5ebc, 0x1d0b0b161d0b0b16, 0x76dbdbad76dbdbad,
    0x3be0e0db3be0e0db, 0x5632326456323264, 0x4e3a3a744e3a3a74, 0x1e0a0a141e0a0a14,
    0xdb494992db494992, 0x0a06060c0a06060c, 0x6c2424486c242448, 0xe45c5cb8e45c5cb8,
    0x5dc2c29f5dc2c29f, 0x6ed3d3bd6ed3d3bd, 0xefacac43efacac43, 0xa66262c4a66262c4,
    0xa8919139a8919139, 0xa4959531a4959531, 0x37e4e4d337e4e4d3, 0x8b7979f28b7979f2,
    0x32e7e7d532e7e7d5, 0x43c8c88b43c8c88b, 0x5937376e5937376e, 0xb76d6ddab76d6dda,
    0x8c8d8d018c8d8d01, 0x64d5d5b164d5d5b1, 0xd24e4e9cd24e4e9c, 0xe0a9a949e0a9a949,
    0xb46c6cd8b46c6cd8, 0xfa5656acfa5656ac, 0x07f4f4f307f4f4f3, 0x25eaeacf25eaeacf,
    0xaf6565caaf6565ca, 0x8e7a7af48e7a7af4, 0xe9aeae47e9aeae47, 0x1808081018080810,
    0xd5baba6fd5baba6f, 0x887878f0887878f0, 0x6f25254a6f25254a, 0x722e2e5c722e2e5c,
    0x241c1c38241c1c38, 0xf1a6a657f1a6a657, 0xc7b4b473c7b4b473, 0x51c6c69751c6c697,
    0x23e8e8cb23e8e8cb, 0x7cdddda17cdddda1, 0x9c7474e89c7474e8, 0x211f1f3e211f1f3e,
    0xdd4b4b96dd4b4b96, 0xdcbdbd61dcbdbd61, 0x868b8b0d868b8b0d, 0x858a8a0f858a8a0f,
    0x907070e0907070e0, 0x423e3e7c423e3e7c, 0xc4b5b571c4b5b571, 0xaa6666ccaa6666cc,
    0xd8484890d8484890, 0x0503030605030306, 0x01f6f6f701f6f6f7, 0x120e0e1c120e0e1c,
    0xa36161c2a36161c2, 0x5f35356a5f35356a, 0xf95757aef95757ae, 0xd0b9b969d0b9b969,
    0x9186861791868617, 0x58c1c19958c1c199, 0x271d1d3a271d1d3a, 0xb99e9e27b99e9e27,
    0x38e1e1d938e1e1d9, 0x13f8f8eb13f8f8eb, 0xb398982bb398982b, 0x3311112233111122,
    0xbb6969d2bb6969d2, 0x70d9d9a970d9d9a9, 0x898e8e07898e8e07, 0xa7949433a7949433,
    0xb69b9b2db69b9b2d, 0x221e1e3c221e1e3c, 0x9287871592878715, 0x20e9e9c920e9e9c9,
    0x49cece8749cece87, 0xff5555aaff5555aa, 0x7828285078282850, 0x7adfdfa57adfdfa5,
    0x8f8c8c038f8c8c03, 0xf8a1a159f8a1a159, 0x8089890980898909, 0x170d0d1a170d0d1a,
    0xdabfbf65dabfbf65, 0x31e6e6d731e6e6d7, 0xc6424284c6424284, 0xb86868d0b86868d0,
    0xc3414182c3414182, 0xb0999929b0999929, 0x772d2d5a772d2d5a, 0x110f0f1e110f0f1e,
    0xcbb0b07bcbb0b07b, 0xfc5454a8fc5454a8, 0xd6bbbb6dd6bbbb6d, 0x3a16162c3a16162c,
};

/* A 32-bit read at any byte offset (x86 reads unaligned words; the type tells the compiler). */
typedef uint32_t unaligned_u32 __attribute__((aligned(1), may_alias));

/* T(x) rotated right by 8·k bits: the 32 bits at byte offset k of x's entry. */
#define TE(x, k) (*(const unaligned_u32 *)((const uint8_t *)&aes_t[(x)] + (k)))

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

/* Touch every cache line of the table (one volatile read each, unrolled: a loop's counter and
 * branch would cost more than the reads), so that the lookups that follow all hit. */
static void prefetch_table(void) {
    const volatile uint64_t *t = aes_t;
#define LINE(i) (void)t[(i) * 8]
#define LINES8(i) LINE(i), LINE(i + 1), LINE(i + 2), LINE(i + 3), LINE(i + 4), LINE(i + 5), \
                  LINE(i + 6), LINE(i + 7)
    LINES8(0), LINES8(8), LINES8(16), LINES8(24);
#undef LINES8
#undef LINE
}

static uint32_t sbox(uint32_t x) { return (uint32_t)(aes_t[x & 0xff] >> 8) & 0xff; }

static uint32_t sub_word(uint32_t w) {
    return sbox(w) | sbox(w >> 8) << 8 | sbox(w >> 16) << 16 | sbox(w >> 24) << 24;
}

static uint32_t ror32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

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
 * SubBytes and MixColumns, the byte offset 4 - r places row r. The last round takes S(x), byte
 * 1 of the entry, from the offset that puts it in row r, and masks the rest. */
#define AES_ROUND(s, c, rk)                                                                   \
    (TE((s)[(c)] & 0xff, 0) ^ TE(((s)[((c) + 1) & 3] >> 8) & 0xff, 3) ^                      \
     TE(((s)[((c) + 2) & 3] >> 16) & 0xff, 2) ^ TE((s)[((c) + 3) & 3] >> 24, 1) ^ (rk))
#define AES_LAST(s, c, rk)                                                                    \
    (((TE((s)[(c)] & 0xff, 1) & 0xff) | (TE(((s)[((c) + 1) & 3] >> 8) & 0xff, 0) & 0xff00) |   \
      (TE(((s)[((c) + 2) & 3] >> 16) & 0xff, 3) & 0xff0000) |                                 \
      (TE((s)[((c) + 3) & 3] >> 24, 2) & 0xff000000)) ^ (rk))

/* One block, in and out as four little-endian column words (in and out may be the same). */
static void aes256_encrypt(const uint32_t rk[60], const uint32_t in[4], uint32_t out[4]) {
    uint32_t s[4], t[4];
    prefetch_table();
    for (int c = 0; c < 4; c++) {
        s[c] = in[c] ^ rk[c];
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
        out[c] = AES_LAST(s, c, rk[56 + c]);
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

/* Bit reversal: the bits within each byte, then the bytes (one instruction). */
static uint64_t rev64(uint64_t x) {
    x = ((x & 0x5555555555555555ull) << 1) | ((x >> 1) & 0x5555555555555555ull);
    x = ((x & 0x3333333333333333ull) << 2) | ((x >> 2) & 0x3333333333333333ull);
    x = ((x & 0x0F0F0F0F0F0F0F0Full) << 4) | ((x >> 4) & 0x0F0F0F0F0F0F0F0Full);
    return __builtin_bswap64(x);
}

struct ghash {
    uint64_t hi, lo;
};

/* X = X * H in GF(2^128) with GCM's reflected bit order (NIST SP 800-38D): a Karatsuba
 * product of the 64-bit halves (the high halves through bit-reversed operands), shifted by one
 * for the reflection, then reduced modulo x^128 + x^7 + x^2 + x + 1. H's operands come
 * precomputed (keep_gcm_init): low half, high half, their XOR, and the three bit-reversed. */
static void gf_mul(struct ghash *x, const uint64_t h[6]) {
    uint64_t y1 = x->hi, y0 = x->lo;
    uint64_t y0r = rev64(y0), y1r = rev64(y1);
    uint64_t z0 = bmul64(y0, h[0]), z1 = bmul64(y1, h[1]), z2 = bmul64(y0 ^ y1, h[2]);
    uint64_t z0h = bmul64(y0r, h[3]), z1h = bmul64(y1r, h[4]);
    uint64_t z2h = bmul64(y0r ^ y1r, h[5]);
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
    x->hi = v3;
    x->lo = v2;
}

/* Absorb data, zero-padded to whole blocks: whole blocks straight from the data, in words. */
static void ghash_update(struct ghash *g, const uint64_t h[6], const uint8_t *data, size_t len) {
    for (; len >= 16; data += 16, len -= 16) {
        g->hi ^= load64_be(data);
        g->lo ^= load64_be(data + 8);
        gf_mul(g, h);
    }
    if (len > 0) {
        uint8_t block[16];
        for (size_t i = 0; i < 16; i++) {
            block[i] = i < len ? data[i] : 0;
        }
        g->hi ^= load64_be(block);
        g->lo ^= load64_be(block + 8);
        gf_mul(g, h);
    }
}

/* The counter block IV || n (n big-endian) as AES input words. */
static void counter_block(uint32_t block[4], const uint8_t iv[KEEP_GCM_IV_SIZE], uint32_t n) {
    block[0] = load32_le(iv);
    block[1] = load32_le(iv + 4);
    block[2] = load32_le(iv + 8);
    block[3] = __builtin_bswap32(n);
}

/* The tag: E(K, J0) ^ GHASH(H, A, C), with J0 = IV || 0^31 || 1. */
static void gcm_tag(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                    const uint8_t *aad, size_t aad_len, const uint8_t *ciphertext, size_t len,
                    uint8_t tag[KEEP_GCM_TAG_SIZE]) {
    struct ghash g = {0, 0};
    uint32_t block[4], mask[4];
    ghash_update(&g, gcm->h, aad, aad_len);
    ghash_update(&g, gcm->h, ciphertext, len);
    g.hi ^= (uint64_t)aad_len * 8;
    g.lo ^= (uint64_t)len * 8;
    gf_mul(&g, gcm->h);
    counter_block(block, iv, 1);
    aes256_encrypt(gcm->round_key, block, mask);
    store64_be(tag, g.hi);
    store64_be(tag + 8, g.lo);
    for (int c = 0; c < 4; c++) {
        store32_le(tag + 4 * c, load32_le(tag + 4 * c) ^ mask[c]);
    }
}

/* CTR mode from counter 2 (GCM's inc32 of J0); in and out may be the same buffer (each word is
 * read before it is written). */
static void gcm_ctr(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                    const uint8_t *in, size_t len, uint8_t *out) {
    uint32_t block[4], stream[4];
    counter_block(block, iv, 2);
    for (uint32_t n = 2; len > 0; n++) {
        block[3] = __builtin_bswap32(n);
        aes256_encrypt(gcm->round_key, block, stream);
        size_t take = len < 16 ? len : 16;
        if (take == 16) {
            for (int c = 0; c < 4; c++) {
                store32_le(out + 4 * c, load32_le(in + 4 * c) ^ stream[c]);
            }
        } else {
            for (size_t i = 0; i < take; i++) {
                out[i] = in[i] ^ (uint8_t)(stream[i / 4] >> (8 * (i % 4)));
            }
        }
        in += take;
        out += take;
        len -= take;
    }
    keep_wipe(stream, sizeof stream);
}

/* H's big-endian 64-bit half from two AES output words (bytes little-endian in each word). */
static uint64_t be_half(uint32_t first, uint32_t second) {
    return (uint64_t)__builtin_bswap32(first) << 32 | __builtin_bswap32(second);
}

void keep_gcm_init(struct keep_gcm *gcm, const uint8_t key[KEEP_GCM_KEY_SIZE]) {
    uint32_t zero[4] = {0, 0, 0, 0}, h[4];
    aes256_expand(gcm->round_key, key);
    aes256_encrypt(gcm->round_key, zero, h);
    uint64_t hi = be_half(h[0], h[1]), lo = be_half(h[2], h[3]);
    gcm->h[0] = lo;
    gcm->h[1] = hi;
    gcm->h[2] = lo ^ hi;
    gcm->h[3] = rev64(lo);
    gcm->h[4] = rev64(hi);
    gcm->h[5] = gcm->h[3] ^ gcm->h[4];
    keep_wipe(h, sizeof h);
}

void keep_gcm_seal(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                   const uint8_t *aad, size_t aad_len, const uint8_t *plaintext, size_t len,
                   uint8_t *ciphertext, uint8_t tag[KEEP_GCM_TAG_SIZE]) {
    gcm_ctr(gcm, iv, plaintext, len, ciphertext);
    gcm_tag(gcm, iv, aad, aad_len, ciphertext, len, tag);
}

/* Two passes, as the contract asks: the tag over everything, then, only if it verifies, the
 * decryption (a single pass would write plaintext before the tag is known). */
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
