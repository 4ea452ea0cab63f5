/* Ring 3's side of the linear memory's gate (ABI.md "Linear memory", version 4): the one
 * sequence the microkernel's fault path expects (entry.S, linear.c). A read of KEEP_LINEAR_GATE
 * with rdx = the size asks for linear memory [0, size) to be mapped; the microkernel answers in
 * rax (0, or -1 refused) and resumes at rsi, the label after the read, having changed any
 * caller-saved register. Used by the runtime (keep_hc.c) and the ring-3 test image. */
#ifndef KEEP_LINEAR_GATE_H
#define KEEP_LINEAR_GATE_H
#include <stdint.h>

#include "keep_abi.h"

static inline long keep_linear_gate(uint64_t size) {
    long answer;
    __asm__ volatile("lea 1f(%%rip), %%rsi\n\t"
                     "movabsq %[gate], %%rax\n\t"
                     "movb (%%rax), %%al\n"
                     "1:"
                     : "=&a"(answer), "+d"(size)
                     : [gate] "i"(KEEP_LINEAR_GATE)
                     : "rcx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory", "cc");
    return answer;
}
#endif
