/* Ring-3 hypercall client (runtime/guest/ukernel/ABI.md, version 3).
 *
 * A call fills the shared hypercall page, then writes 1 to the MMIO doorbell; the VMM answers
 * synchronously in status/ret and the 64 KiB data buffer. Payloads are passed as offsets and
 * lengths inside that buffer, never as pointers. */
#ifndef KEEP_HC_H
#define KEEP_HC_H

#include <stddef.h>
#include <stdint.h>

#include "keep_abi.h"

struct keep_hc_result {
    int32_t status; /* 0 ok, negative errno */
    uint64_t ret[2];
};

/* The addresses the microkernel hands over in keep_user_info (validated by keep_hc_init). */
void keep_hc_init(const struct keep_user_info *info);

/* One raw call with up to six arguments. */
struct keep_hc_result keep_hc_call(uint32_t call, const uint64_t args[6]);

/* The shared data buffer and its size (payloads are copied in and out of it). */
uint8_t *keep_hc_buffer(void);
size_t keep_hc_buffer_size(void);

#endif
