/* The faults that are the application's own errors, not the keep's: ring 3 running its stack
 * into the guard page, and (version 4) ring 3 touching linear memory it has not grown to
 * (linear.c). The ring-3 runtime checks neither (runtime/guest/wasm/keep_rt_config.h), so this is
 * where "call stack exhausted" and "out of bounds memory access" are decided, in trusted code. */
#include "hypercall.h"
#include "keep_abi.h"

void keep_fault_stack_guard(uint64_t cr2);
__attribute__((noreturn)) void keep_end_as_trap(const char *message, uint64_t length);

/* End the keep exactly as the runtime ends a trap: the trap line on stderr, exit status 134. */
void keep_end_as_trap(const char *message, uint64_t length) {
    volatile char *buffer = (volatile char *)KEEP_HC_BUFFER_GPA;
    for (uint64_t i = 0; i < length; i++) {
        buffer[i] = message[i];
    }
    keep_hypercall(KEEP_HC_CONSOLE_WRITE, 2, 0, length);
    keep_exit(KEEP_TRAP_EXIT_STATUS);
}

/* Called from keep_fault (entry.S) for a ring-3 #PF, with CR2. Returns unless CR2 lies in the
 * guard: the unmapped gap [heap_end, stack_bottom) of the measured user-info page. */
void keep_fault_stack_guard(uint64_t cr2) {
    const struct keep_user_info *info = (const struct keep_user_info *)KEEP_USER_INFO_GPA;
    if (cr2 < info->heap_end || cr2 >= info->stack_bottom) {
        return;
    }
    static const char message[] = KEEP_STACK_EXHAUSTED_MESSAGE;
    keep_end_as_trap(message, sizeof(message) - 1);
}
