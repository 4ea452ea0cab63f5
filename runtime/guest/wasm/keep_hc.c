/* Ring-3 hypercall client and the keep's implementation of keep_platform.h. */
#include "keep_hc.h"

#include <string.h>

#include "keep_linear_gate.h"
#include "keep_platform.h"

static volatile struct keep_hc_page *hc_page;
static volatile uint32_t *hc_doorbell;
static uint8_t *hc_buffer;
static size_t hc_buffer_size;
static const uint8_t *attested_report_data;

void keep_hc_init(const struct keep_user_info *info) {
    hc_page = (volatile struct keep_hc_page *)(uintptr_t)info->hc_page;
    hc_doorbell = (volatile uint32_t *)(uintptr_t)info->doorbell;
    hc_buffer = (uint8_t *)(uintptr_t)info->hc_buffer;
    hc_buffer_size = (size_t)info->hc_buffer_size;
    if (hc_buffer_size > KEEP_HC_BUFFER_SIZE) {
        hc_buffer_size = KEEP_HC_BUFFER_SIZE;
    }
}

struct keep_hc_result keep_hc_call(uint32_t call, const uint64_t args[6]) {
    hc_page->magic = KEEP_HC_MAGIC;
    hc_page->version = KEEP_ABI_VERSION;
    hc_page->call = call;
    hc_page->status = 0;
    for (int i = 0; i < 6; i++) {
        hc_page->arg[i] = args[i];
    }
    hc_page->ret[0] = 0;
    hc_page->ret[1] = 0;
    /* The page must be complete before the doorbell write exits to the VMM. */
    __asm__ volatile("" ::: "memory");
    *hc_doorbell = KEEP_DOORBELL_RING;
    __asm__ volatile("" ::: "memory");
    struct keep_hc_result result = {hc_page->status, {hc_page->ret[0], hc_page->ret[1]}};
    return result;
}

uint8_t *keep_hc_buffer(void) { return hc_buffer; }

size_t keep_hc_buffer_size(void) { return hc_buffer_size; }

/* ---- keep_platform.h -------------------------------------------------------------------- */

void keep_platform_init(uintptr_t boot_arg, struct keep_platform_memory *memory) {
    const struct keep_user_info *info = (const struct keep_user_info *)boot_arg;
    if (info == 0 || info->magic != KEEP_USER_INFO_MAGIC || info->abi_version != KEEP_ABI_VERSION) {
        /* Without a valid block there is no doorbell to report through: fault visibly. */
        __builtin_trap();
    }
    keep_hc_init(info);
    /* The microkernel left the REPORT_DATA it attested in the stack's top 64 bytes, which
     * _start set aside (ABI.md, boot flow 3). */
    attested_report_data = (const uint8_t *)(uintptr_t)(info->stack_top - KEEP_REPORT_DATA_SIZE);
    memory->heap_start = (uintptr_t)info->heap_start;
    memory->heap_end = (uintptr_t)info->heap_end;
    /* The stack and its guard page are the microkernel's business (ABI.md): nothing to do. */
}

/* The page tables' range at KEEP_LINEAR_BASE, not present until the microkernel maps it. */
uintptr_t keep_platform_linear_reserve(void) { return (uintptr_t)KEEP_LINEAR_BASE; }

/* Ring 3 cannot map memory: it asks the microkernel through the gate (keep_linear_gate.h). */
int keep_platform_linear_map(uintptr_t base, size_t size) {
    (void)base; /* always KEEP_LINEAR_BASE */
    return keep_linear_gate(size) == 0 ? 0 : -1;
}

long keep_platform_console_write(int fd, const void *buf, size_t len) {
    const uint8_t *bytes = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done;
        if (chunk > hc_buffer_size) {
            chunk = hc_buffer_size;
        }
        memcpy(hc_buffer, bytes + done, chunk);
        uint64_t args[6] = {(uint64_t)fd, 0, chunk, 0, 0, 0};
        struct keep_hc_result r = keep_hc_call(KEEP_HC_CONSOLE_WRITE, args);
        if (r.status < 0) {
            return done > 0 ? (long)done : (long)r.status;
        }
        if (r.ret[0] == 0 || r.ret[0] > chunk) {
            break;
        }
        done += (size_t)r.ret[0];
    }
    return (long)done;
}

long keep_platform_stdin_read(void *buf, size_t len) {
    if (len > hc_buffer_size) {
        len = hc_buffer_size;
    }
    uint64_t args[6] = {0, len, 0, 0, 0, 0};
    struct keep_hc_result r = keep_hc_call(KEEP_HC_STDIN_READ, args);
    if (r.status < 0) {
        return r.status;
    }
    size_t got = (size_t)r.ret[0];
    if (got > len) { /* the VMM is untrusted: never believe a length past what we asked */
        got = len;
    }
    memcpy(buf, hc_buffer, got);
    return (long)got;
}

long keep_platform_launch_args(void *buf, size_t max) {
    size_t room = max < hc_buffer_size ? max : hc_buffer_size;
    uint64_t args[6] = {0, room, 0, 0, 0, 0};
    struct keep_hc_result r = keep_hc_call(KEEP_HC_LAUNCH_ARGS, args);
    if (r.status < 0) {
        return r.status;
    }
    size_t length = (size_t)r.ret[0];
    if (length > room) {
        return -7; /* E2BIG */
    }
    memcpy(buf, hc_buffer, length);
    return (long)length;
}

int keep_platform_clock(uint32_t clock_id, uint64_t *nanoseconds) {
    uint64_t args[6] = {clock_id, 0, 0, 0, 0, 0};
    struct keep_hc_result r = keep_hc_call(KEEP_HC_CLOCK, args);
    if (r.status < 0) {
        return r.status;
    }
    *nanoseconds = r.ret[0];
    return 0;
}

long keep_platform_trees_read(void *buf, size_t len, uint64_t position, uint64_t *total) {
    size_t room = len < hc_buffer_size ? len : hc_buffer_size;
    uint64_t args[6] = {0, room, position, 0, 0, 0};
    struct keep_hc_result r = keep_hc_call(KEEP_HC_TREES, args);
    if (r.status < 0) {
        return r.status;
    }
    size_t got = (size_t)r.ret[0];
    if (got > room) { /* never believe a length past what we asked */
        got = room;
    }
    *total = r.ret[1];
    if (got > 0) {
        memcpy(buf, hc_buffer, got);
    }
    return (long)got;
}

long keep_platform_result_write(const void *buf, size_t len, uint64_t position, uint64_t total) {
    const uint8_t *bytes = buf;
    size_t done = 0;
    while (done < len) {
        size_t chunk = len - done < hc_buffer_size ? len - done : hc_buffer_size;
        memcpy(hc_buffer, bytes + done, chunk);
        uint64_t args[6] = {0, chunk, position + done, total, 0, 0};
        struct keep_hc_result r = keep_hc_call(KEEP_HC_RESULT, args);
        if (r.status < 0) {
            return r.status;
        }
        done += chunk;
    }
    return 0;
}

const uint8_t *keep_platform_attested_report_data(void) { return attested_report_data; }

_Noreturn void keep_platform_exit(int status) {
    uint64_t args[6] = {(uint64_t)(uint32_t)status, 0, 0, 0, 0, 0};
    keep_hc_call(KEEP_HC_EXIT, args);
    for (;;) {
        __builtin_trap(); /* EXIT does not return; if the VMM resumes us anyway, fault. */
    }
}

/* Ring-3 entry: rsp = keep_user_info.stack_top (16-byte aligned), rdi = the info block. The top
 * 64 bytes hold the attested REPORT_DATA (ABI.md, boot flow 3): set them aside first. */
__asm__(
    ".pushsection .text.keep_start,\"ax\",@progbits\n"
    ".globl _start\n"
    ".type _start,@function\n"
    "_start:\n"
    "  sub $64, %rsp\n"
    "  xor %ebp, %ebp\n"
    "  call keep_runtime_main\n"
    "  ud2\n"
    ".size _start, .-_start\n"
    ".popsection\n");
