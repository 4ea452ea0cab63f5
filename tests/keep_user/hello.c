/* A tiny ring-3 test image for the layout and boot tests. It reads its launch arguments; the
 * first character of the first one picks what it does (see ACTIONS in tests/ukernel_images.py):
 * '0' greets and exits 7, the others touch memory the layout forbids and must fault. */
#include "keep_abi.h"
#include "keep_linear_gate.h"

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

/* Write through the linear memory at offset, read back through the heap's identity mapping
 * where ring 0 must have put it: chunk k is the heap's k-th 2 MiB page from its (2 MiB-aligned)
 * top. 'y' if both agree. */
static char backed_where_declared(const struct keep_user_info *info, uint64_t offset) {
    uint64_t top = info->heap_end & ~(uint64_t)(KEEP_LINEAR_CHUNK - 1);
    uint64_t k = offset / KEEP_LINEAR_CHUNK;
    volatile uint64_t *linear = (volatile uint64_t *)(KEEP_LINEAR_BASE + offset);
    volatile uint64_t *ram =
        (volatile uint64_t *)(top - (k + 1) * KEEP_LINEAR_CHUNK + offset % KEEP_LINEAR_CHUNK);
    *linear = 0x6b656570ull + offset;
    return *ram == 0x6b656570ull + offset ? 'y' : 'n';
}

/* Actions 'g' and 'h': the gate's answers to a row of sizes, one character each ('0' mapped,
 * 'r' refused; after 'g''s fourth and sixth, 'y' for each page that is the declared heap RAM).
 * Returns the count; *past is where the caller's read then traps. */
static uint64_t linear_answers(const struct keep_user_info *info, char action,
                               volatile char *out, uint64_t *past) {
    uint64_t chunk = KEEP_LINEAR_CHUNK, page = KEEP_PAGE_SIZE;
    uint64_t top = info->heap_end & ~(chunk - 1);
    uint64_t most = (top - info->heap_start) / chunk * chunk; /* every chunk the heap holds */
    const uint64_t g[] = {page + 1, 0 - page, most + chunk, 3 * chunk + 5 * page, 2 * chunk,
                          4 * chunk + page};
    const uint64_t h[] = {most, most + page};
    const uint64_t *sizes = action == 'g' ? g : h;
    unsigned count = action == 'g' ? sizeof(g) / sizeof(g[0]) : sizeof(h) / sizeof(h[0]);
    uint64_t n = 0;
    for (unsigned i = 0; i < count; i++) {
        out[n++] = keep_linear_gate(sizes[i]) == 0 ? '0' : 'r';
        if (action == 'g' && i == 3) { /* three large pages, five 4 KiB pages of the fourth */
            out[n++] = backed_where_declared(info, 0);
            out[n++] = backed_where_declared(info, 2 * chunk + 8);
            out[n++] = backed_where_declared(info, 3 * chunk + 4 * page);
        }
        if (action == 'g' && i == 5) { /* the fourth is a large page, the PT serves the fifth */
            out[n++] = backed_where_declared(info, 3 * chunk + 5 * page + 8);
            out[n++] = backed_where_declared(info, 4 * chunk);
        }
    }
    out[n++] = '\n';
    /* 'g': inside the PT's reused page, where the fourth chunk's entries were: cleared, so not
     * mapped; 'h': the end of all the heap holds. */
    *past = action == 'g' ? 4 * chunk + 2 * page : most;
    return n;
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
    case 'a': exit_status = *(volatile uint64_t *)KEEP_LINEAR_BASE; break;       /* not grown */
    case 'b': exit_status = *(volatile uint8_t *)(KEEP_LINEAR_BASE + KEEP_LINEAR_RESERVE - 1);
        break;                                                                   /* the guard */
    case 'c': exit_status = *(volatile uint64_t *)(KEEP_LINEAR_BASE + KEEP_LINEAR_RESERVE);
        break;                                                                   /* past it */
    case 'd': exit_status = *(volatile uint64_t *)(KEEP_LINEAR_GATE - KEEP_PAGE_SIZE);
        break;                                                                   /* below */
    case 'i': exit_status = *(volatile uint64_t *)(info->heap_start - 8); break; /* the gap */
    case 'j': *(volatile uint64_t *)info->heap_end = 1; break;     /* the guard's lowest page */
    case 'g':
    case 'h': {
        uint64_t past = 0;
        uint64_t n = linear_answers(info, action, buffer, &past);
        call(info, KEEP_HC_CONSOLE_WRITE, 1, 0, n);
        exit_status = *(volatile uint8_t *)(KEEP_LINEAR_BASE + past); /* past the end */
        break;
    }
    default: break;
    }
    for (unsigned i = 0; i < sizeof(greeting) - 1; i++) buffer[i] = greeting[i];
    call(info, KEEP_HC_CONSOLE_WRITE, 1, 0, sizeof(greeting) - 1);
    call(info, KEEP_HC_EXIT, exit_status + scratch[sizeof(scratch) - 1] - 1, 0, 0);
    for (;;) {
    }
}
