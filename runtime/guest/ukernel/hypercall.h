/* Ring-0 side of the hypercall ABI. */
#ifndef KEEP_HYPERCALL_H
#define KEEP_HYPERCALL_H
#include <stdint.h>

int32_t keep_hypercall(uint32_t call, uint64_t arg0, uint64_t arg1, uint64_t arg2);
__attribute__((noreturn)) void keep_exit(uint64_t status);
__attribute__((noreturn)) void keep_halt(void);

#endif
