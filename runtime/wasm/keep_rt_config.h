/* Configuration of the wasm2c runtime and generated code inside the keep. Force-included
 * (-include) first into every wasm2c-related translation unit, so all of them agree.
 *
 * No guard pages, no signals, no mmap: linear memory is heap memory with an explicit bounds
 * check on every access, and a trap ends the application through keep_wasm_trap. Stack
 * exhaustion is detected in each wasm function's prologue by comparing the stack pointer with
 * keep_stack_limit (wasm2c's call-depth check, with the limit computed from the real rsp). */
#ifndef KEEP_RT_CONFIG_H
#define KEEP_RT_CONFIG_H

#include <stdint.h>

#define WASM_RT_USE_MMAP 0
#define WASM_RT_MEMCHECK_BOUNDS_CHECK 1
#define WASM_RT_SKIP_SIGNAL_RECOVERY 1
#define WASM_RT_STACK_DEPTH_COUNT 1
#define WASM_RT_ALLOW_SEGUE 0
#define WASM_RT_TRAP_HANDLER keep_wasm_trap

extern uintptr_t keep_stack_limit;

/* 0 (so any depth exceeds it: trap) once rsp is below the limit, otherwise "no limit". */
static inline __attribute__((always_inline)) uint32_t keep_stack_depth_limit(void) {
    uintptr_t sp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
    return sp < keep_stack_limit ? 0u : 0xffffffffu;
}
#define WASM_RT_MAX_CALL_STACK_DEPTH keep_stack_depth_limit()

#endif
