/* The preopened directory trees (keep run --dir): received after attestation, checked against
 * the REPORT_DATA this keep attested, kept for the file system (runtime/guest/wasm/README.md). */
#ifndef KEEP_TREES_H
#define KEEP_TREES_H

#include <stdint.h>

#include "keep_abi.h"

struct keep_tree {
    const char *guest;       /* the path the application sees (not NUL-terminated) */
    uint32_t guest_len;
    const uint8_t *encoding; /* the canonical tree encoding, as received and hashed */
    uint64_t length;
    uint32_t flags; /* KEEP_TREE_FLAG_RW (keep_abi.h): hand it back at exit; bound when set */
};

/* Fetch, check and keep the trees; ends the keep (keep_fatal) if they are not the ones bound
 * into the attested REPORT_DATA. Called once, after the launch arguments, before the app. */
void keep_trees_init(void);

uint32_t keep_tree_count(void);
const struct keep_tree *keep_tree_at(uint32_t index);

#endif
