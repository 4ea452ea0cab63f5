/* A tiny ring-3 test image for the layout and boot tests. It reads its launch arguments; the
 * first character of the first one picks what it does (see ACTIONS in tests/ukernel_images.py):
 * '0' greets and exits 7, the others touch memory the layout forbids and must fault. */
#include "keep_abi.h"

static long call(const struct keep_user_info *info, uint32_t nr, uint64_t a0, uint64_t a1,
                 uint64_t a2) {
    volatile struct keep_hc_page *page = (volatile struct keep_hc_page *)info->hc_page;
    page->magic = KEEP_HC_MAGIC;
    page->version = KEEP_ABI_VERSION;
    page->call = nr;
    page->arg[0] = a0;
    page->arg[1] = a1;
    page->arg[2] = a2;
    *(volatile uint32_t *)info->doorbell = KEEP_DOORBELL_RING;
    if (page->status != 0) return page->status;
    return (long)page->ret[0];
}

const char greeting[] = "hello from ring 3\n"; /* .rodata */
volatile uint64_t exit_status = 7;              /* .data */
static volatile char scratch[3 * 4096];         /* .bss */

__attribute__((noreturn)) void _start(const struct keep_user_info *info) {
    volatile char *buffer = (volatile char *)info->hc_buffer;
    char action = '0';
    if (call(info, KEEP_HC_LAUNCH_ARGS, 0, 4096, 0) > 8 && *(volatile uint32_t *)buffer > 0) {
        action = buffer[8];
    }
    scratch[sizeof(scratch) - 1] = 1;
    *(volatile uint64_t *)info->heap_start = 1;            /* first heap page */
    *(volatile uint64_t *)(info->heap_end - 8) = 1;        /* last heap page */
    *(volatile uint64_t *)info->stack_bottom = 1;          /* bottom of the stack */
    switch (action) {
    case '1': *(volatile uint64_t *)8 = 1; break;                                /* null page */
    case '2': __asm__ volatile("int $0x80"); break;                             /* DPL-0 gate */
    case '3': *(volatile uint64_t *)KEEP_UKERNEL_BASE = 1; break;                /* ring-0 text */
    case '4': ((void (*)(void))info->heap_start)(); break;                       /* NX heap */
    case '5': exit_status = *(volatile uint64_t *)KEEP_PAGE_TABLES_GPA; break;   /* unmapped */
    case '6': *(volatile uint64_t *)KEEP_USER_INFO_GPA = 1; break;               /* read-only */
    case '7': exit_status = *(volatile uint64_t *)KEEP_SECRETS_GPA; break;       /* ring 0 only */
    case '8': *(volatile uint64_t *)(info->stack_bottom - 8) = 1; break;         /* guard page */
    case '9': __asm__ volatile("cli"); break;                                    /* privileged */
    default: break;
    }
    for (unsigned i = 0; i < sizeof(greeting) - 1; i++) buffer[i] = greeting[i];
    call(info, KEEP_HC_CONSOLE_WRITE, 1, 0, sizeof(greeting) - 1);
    call(info, KEEP_HC_EXIT, exit_status + scratch[sizeof(scratch) - 1] - 1, 0, 0);
    for (;;) {
    }
}
