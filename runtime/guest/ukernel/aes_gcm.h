/* AES-256-GCM for ring 0: the cipher of SNP guest messages (96-bit IV, 128-bit tag only).
 *
 * Contract: keep_gcm_seal encrypts and tags; keep_gcm_open checks the tag over the AAD and the
 * ciphertext in constant time BEFORE it decrypts, and writes no plaintext when the tag is wrong.
 * Callers pass private memory: a buffer the VMM can change between the tag check and the
 * decryption would defeat the check (snp_msg.c copies a response before opening it).
 * keep_gcm_wipe erases the key schedule and the hash key. Tested against the NIST CAVS vectors
 * (tests/test_ukernel_gcm.py, host build of this file). */
#ifndef KEEP_AES_GCM_H
#define KEEP_AES_GCM_H
#include <stddef.h>
#include <stdint.h>

#define KEEP_GCM_KEY_SIZE 32
#define KEEP_GCM_IV_SIZE 12
#define KEEP_GCM_TAG_SIZE 16

struct keep_gcm {
    uint32_t round_key[60]; /* AES-256: 15 round keys, columns packed little-endian */
    /* The hash key H = E(K, 0^128) as the multiplier's operands: its low and high big-endian
     * halves, their XOR, and the same three bit-reversed (aes_gcm.c, gf_mul). */
    uint64_t h[6];
};

void keep_gcm_init(struct keep_gcm *gcm, const uint8_t key[KEEP_GCM_KEY_SIZE]);
void keep_gcm_seal(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                   const uint8_t *aad, size_t aad_len, const uint8_t *plaintext, size_t len,
                   uint8_t *ciphertext, uint8_t tag[KEEP_GCM_TAG_SIZE]);
/* 0 and the plaintext when the tag verifies; -1 and nothing written when it does not. */
int keep_gcm_open(const struct keep_gcm *gcm, const uint8_t iv[KEEP_GCM_IV_SIZE],
                  const uint8_t *aad, size_t aad_len, const uint8_t *ciphertext, size_t len,
                  const uint8_t tag[KEEP_GCM_TAG_SIZE], uint8_t *plaintext);
void keep_gcm_wipe(struct keep_gcm *gcm);
/* Zero n bytes so that the compiler cannot drop it (a key about to go out of use). */
void keep_wipe(void *buffer, size_t n);

#endif
