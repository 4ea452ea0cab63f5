/* Ring-0 hypercalls: fill the shared page, ring the doorbell (a GHCB MMIO-write request,
 * doorbell.c), read the status back. */
#include "hypercall.h"

#include "doorbell.h"
#include "keep_abi.h"

volatile struct keep_hc_page *keep_hc_prepare(uint32_t call, uint64_t arg0, uint64_t arg1,
                                              uint64_t arg2) {
    volatile struct keep_hc_page *page = (volatile struct keep_hc_page *)KEEP_HC_PAGE_GPA;
    page->magic = KEEP_HC_MAGIC;
    page->version = KEEP_ABI_VERSION;
    page->call = call;
    page->arg[0] = arg0;
    page->arg[1] = arg1;
    page->arg[2] = arg2;
    return page;
}

int32_t keep_hypercall(uint32_t call, uint64_t arg0, uint64_t arg1, uint64_t arg2) {
    volatile struct keep_hc_page *page = keep_hc_prepare(call, arg0, arg1, arg2);
    keep_doorbell(KEEP_DOORBELL_RING, 4);
    return page->status;
}

void keep_exit(uint64_t status) {
    keep_hypercall(KEEP_HC_EXIT, status, 0, 0);
    keep_halt();
}

void keep_stop(uint64_t status, uint64_t reason, uint64_t expected, uint64_t found) {
    volatile struct keep_hc_page *page = (volatile struct keep_hc_page *)KEEP_HC_PAGE_GPA;
    page->arg[3] = found;
    keep_hypercall(KEEP_HC_EXIT, status, reason, expected);
    keep_halt();
}
