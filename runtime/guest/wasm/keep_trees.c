/* Preopened trees: fetched from the host after attestation, as untrusted input (like stdin),
 * and accepted only if they are the ones this keep attested.
 *
 * The transfer blob (toolchain/measure/trees.py, transfer_blob): "KTREES2\0", the runner's 64-byte
 * nonce, u32 count, then per tree u32 guest path length, the path, u32 flags (bit 0: :rw, hand
 * the tree back at exit; the other bits zero), u64 encoding length, the canonical encoding.
 * Every length is checked against the blob before use. The keep computes SHA-512 over each
 * encoding itself and requires
 *     SHA-512(nonce || digest_1 || ... || digest_n [|| "KEEPRW1\0" || flag_1 ... flag_n])
 *         == the REPORT_DATA it attested
 * (the bracket only when a tree is :rw, one byte per tree, 1 for :rw: a host cannot have a
 * tree handed back behind the evidence's back), which the microkernel left in private memory (ABI.md, boot flow): a host that changes, adds,
 * drops or reorders a tree, or lies about the nonce, ends the keep before the application
 * runs. (A host that sends no blob at all withholds every tree: the application then finds no
 * preopened directory, as without --dir.) */
#include "keep_trees.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"
#include "sha512.h"

/* The magics and bounds are the ABI's (keep_abi.h, generated from toolchain/measure/abi.py). */
#define NONCE_SIZE KEEP_REPORT_DATA_SIZE /* the runner's nonce is the REPORT_DATA it asks for */
#define TRANSFER_MAX (KEEP_TREES_MAX_BYTES + (1u << 20)) /* plus guest paths and headers */

static struct keep_tree trees[KEEP_TREES_MAX_COUNT];
static uint32_t tree_count;

uint32_t keep_tree_count(void) { return tree_count; }

const struct keep_tree *keep_tree_at(uint32_t index) {
    return index < tree_count ? &trees[index] : NULL;
}

/* The whole blob, read in chunks; NULL with *total 0 when the host sends none. */
static uint8_t *fetch(uint64_t *total) {
    uint64_t length = 0;
    if (keep_platform_trees_read(NULL, 0, 0, &length) < 0) {
        keep_fatal("cannot read the preopened trees");
    }
    *total = length;
    if (length == 0) {
        return NULL;
    }
    if (length > TRANSFER_MAX) {
        keep_fatal("the preopened trees are larger than a keep accepts");
    }
    uint8_t *blob = malloc((size_t)length);
    if (blob == NULL) {
        keep_fatal("out of memory for the preopened trees");
    }
    uint64_t at = 0;
    while (at < length) {
        uint64_t again = 0;
        long n = keep_platform_trees_read(blob + at, (size_t)(length - at), at, &again);
        if (n <= 0 || again != length) {
            keep_fatal("the preopened trees changed or ended while being read");
        }
        at += (uint64_t)n;
    }
    return blob;
}

static bool take(const uint8_t *blob, uint64_t total, uint64_t *at, uint64_t n,
                 const uint8_t **out) {
    if (n > total - *at) {
        return false;
    }
    *out = blob + *at;
    *at += n;
    return true;
}

static bool take_u32(const uint8_t *blob, uint64_t total, uint64_t *at, uint32_t *out) {
    const uint8_t *p;
    if (!take(blob, total, at, 4, &p)) {
        return false;
    }
    memcpy(out, p, 4);
    return true;
}

static bool take_u64(const uint8_t *blob, uint64_t total, uint64_t *at, uint64_t *out) {
    const uint8_t *p;
    if (!take(blob, total, at, 8, &p)) {
        return false;
    }
    memcpy(out, p, 8);
    return true;
}

void keep_trees_init(void) {
    uint64_t total = 0;
    uint8_t *blob = fetch(&total);
    if (blob == NULL) {
        return;
    }
    const uint8_t *attested = keep_platform_attested_report_data();
    if (attested == NULL) {
        keep_fatal("preopened trees were sent, but this keep attested nothing to check them by");
    }
    uint64_t at = 0;
    const uint8_t *magic, *nonce;
    uint32_t count;
    if (!take(blob, total, &at, sizeof KEEP_TRANSFER_MAGIC, &magic) ||
        memcmp(magic, KEEP_TRANSFER_MAGIC, sizeof KEEP_TRANSFER_MAGIC) != 0 ||
        !take(blob, total, &at, NONCE_SIZE, &nonce) || !take_u32(blob, total, &at, &count) ||
        count == 0 || count > KEEP_TREES_MAX_COUNT) {
        keep_fatal("the preopened trees are malformed (header)");
    }
    struct sha512 binding;
    sha512_init(&binding);
    sha512_update(&binding, nonce, NONCE_SIZE);
    bool any_rw = false;
    for (uint32_t i = 0; i < count; i++) {
        struct keep_tree *tree = &trees[i];
        const uint8_t *guest;
        if (!take_u32(blob, total, &at, &tree->guest_len) || tree->guest_len == 0 ||
            !take(blob, total, &at, tree->guest_len, &guest) ||
            !take_u32(blob, total, &at, &tree->flags) || (tree->flags & ~KEEP_TREE_FLAG_RW) ||
            !take_u64(blob, total, &at, &tree->length) ||
            !take(blob, total, &at, tree->length, &tree->encoding) ||
            tree->length < sizeof KEEP_TREE_MAGIC ||
            memcmp(tree->encoding, KEEP_TREE_MAGIC, sizeof KEEP_TREE_MAGIC) != 0) {
            keep_fatal("the preopened trees are malformed (a tree)");
        }
        tree->guest = (const char *)guest;
        struct sha512 h;
        uint8_t digest[SHA512_DIGEST_SIZE];
        sha512_init(&h);
        sha512_update(&h, tree->encoding, (size_t)tree->length);
        sha512_final(&h, digest);
        sha512_update(&binding, digest, sizeof digest);
        any_rw = any_rw || (tree->flags & KEEP_TREE_FLAG_RW);
    }
    if (any_rw) {
        sha512_update(&binding, (const uint8_t *)KEEP_RW_BINDING_TAG, sizeof KEEP_RW_BINDING_TAG);
        for (uint32_t i = 0; i < count; i++) {
            uint8_t flag = (trees[i].flags & KEEP_TREE_FLAG_RW) ? 1 : 0;
            sha512_update(&binding, &flag, 1);
        }
    }
    if (at != total) {
        keep_fatal("the preopened trees are malformed (bytes after the last tree)");
    }
    uint8_t bound[SHA512_DIGEST_SIZE];
    sha512_final(&binding, bound);
    if (memcmp(bound, attested, sizeof bound) != 0) {
        keep_fatal("the preopened trees are not the ones this keep attested (REPORT_DATA differs)");
    }
    tree_count = count;
}
