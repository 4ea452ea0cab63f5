/* The runtime's main: platform, heap, launch arguments, then the application; and what happens
 * when the application traps. */
#include <stdint.h>
#include <string.h>

#include "keep_fs.h"
#include "keep_platform.h"
#include "keep_runtime.h"
#include "keep_trees.h"
#include "wasm-rt.h"

void keep_write_str(int fd, const char *s) { keep_platform_console_write(fd, s, strlen(s)); }

_Noreturn void keep_fatal(const char *message) {
    keep_write_str(2, "keep: ");
    keep_write_str(2, message);
    keep_write_str(2, "\n");
    keep_platform_exit(KEEP_FATAL_EXIT_STATUS);
}

/* Short, stable names for the traps (the differential tests map wasmtime's trap codes to these). */
static const char *trap_name(wasm_rt_trap_t code) {
    switch (code) {
    case WASM_RT_TRAP_OOB:
        return "out of bounds memory access";
    case WASM_RT_TRAP_INT_OVERFLOW:
        return "integer overflow";
    case WASM_RT_TRAP_DIV_BY_ZERO:
        return "integer divide by zero";
    case WASM_RT_TRAP_INVALID_CONVERSION:
        return "invalid conversion to integer";
    case WASM_RT_TRAP_UNREACHABLE:
        return "unreachable";
    case WASM_RT_TRAP_CALL_INDIRECT:
        return "indirect call";
    case WASM_RT_TRAP_NULL_REF:
        return "null reference";
    case WASM_RT_TRAP_UNCAUGHT_EXCEPTION:
        return "uncaught exception";
    case WASM_RT_TRAP_UNALIGNED:
        return "unaligned atomic";
    case WASM_RT_TRAP_EXHAUSTION:
        return "call stack exhausted";
    default:
        return "unknown trap";
    }
}

/* wasm_rt_trap lands here (WASM_RT_TRAP_HANDLER): no unwinding, the application is over. */
_Noreturn void keep_wasm_trap(wasm_rt_trap_t code) {
    keep_write_str(2, "wasm trap: ");
    keep_write_str(2, trap_name(code));
    keep_write_str(2, "\n");
    keep_platform_exit(KEEP_TRAP_EXIT_STATUS);
}

/* In the keep the microkernel ends a stack overflow itself (the guard page fault never returns
 * to ring 3); the hostcheck build's SIGSEGV handler calls this. Same bytes, same status. */
_Noreturn void keep_stack_exhausted(void) { keep_wasm_trap(WASM_RT_TRAP_EXHAUSTION); }

/* Likewise the microkernel ends an access past the linear memory (linear.c); hostcheck's
 * SIGSEGV handler calls this. */
_Noreturn void keep_out_of_bounds(void) { keep_wasm_trap(WASM_RT_TRAP_OOB); }

/* The application ended on its own (proc_exit, or _start returned): the :rw trees go back to the
 * host first. A trap or a fatal error ends the keep without handing anything back. */
_Noreturn void keep_app_exit(int status) {
    fs_hand_back();
    keep_platform_exit(status);
}

_Noreturn void keep_runtime_main(uintptr_t boot_arg) {
    struct keep_platform_memory memory = {0, 0};
    keep_platform_init(boot_arg, &memory);
    keep_heap_init(memory.heap_start, keep_linear_init(memory.heap_start, memory.heap_end));
    keep_wasi_init();
    keep_trees_init(); /* after attestation, before the application */
    keep_fs_init();    /* the preopened directories, on the checked trees */
    wasm_rt_init();
    keep_app_exit(keep_app_run());
}
