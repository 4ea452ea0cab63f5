/* Ring-0 side of the hypercall ABI. */
#ifndef KEEP_HYPERCALL_H
#define KEEP_HYPERCALL_H
#include <stdint.h>

#include "keep_abi.h"

/* Fill the hypercall page with a request (magic, version, call, the first three arguments). */
volatile struct keep_hc_page *keep_hc_prepare(uint32_t call, uint64_t arg0, uint64_t arg1,
                                              uint64_t arg2);

int32_t keep_hypercall(uint32_t call, uint64_t arg0, uint64_t arg1, uint64_t arg2);
__attribute__((noreturn)) void keep_exit(uint64_t status);
/* EXIT with status, a KEEP_STOP_* reason, and the expected and found values (version 4). */
__attribute__((noreturn)) void keep_stop(uint64_t status, uint64_t reason, uint64_t expected,
                                         uint64_t found);
__attribute__((noreturn)) void keep_halt(void);

#endif
