/* The one fault that is the application's own error, not the keep's: ring 3 running its stack
 * into the guard page. The ring-3 runtime checks no stack depth (runtime/guest/wasm/keep_rt_config.h),
 * so this is where "call stack exhausted" is decided, in trusted code. */
#include "hypercall.h"
#include "keep_abi.h"

void keep_fault_stack_guard(uint64_t cr2);

/* Called from keep_fault (entry.S) for a ring-3 #PF, with CR2. Returns unless CR2 lies in the
 * guard: the unmapped gap [heap_end, stack_bottom) of the measured user-info page. Then it ends
 * the keep exactly as the runtime ends a trap: the trap line on stderr, exit status 134. */
void keep_fault_stack_guard(uint64_t cr2) {
    const struct keep_user_info *info = (const struct keep_user_info *)KEEP_USER_INFO_GPA;
    if (cr2 < info->heap_end || cr2 >= info->stack_bottom) {
        return;
    }
    static const char message[] = KEEP_STACK_EXHAUSTED_MESSAGE;
    volatile char *buffer = (volatile char *)KEEP_HC_BUFFER_GPA;
    for (uint64_t i = 0; i < sizeof(message) - 1; i++) {
        buffer[i] = message[i];
    }
    keep_hypercall(KEEP_HC_CONSOLE_WRITE, 2, 0, sizeof(message) - 1);
    keep_exit(KEEP_TRAP_EXIT_STATUS);
}
