/* Ring-0 hypercalls: fill the shared page, ring the MMIO doorbell, read the status back. */
#include "hypercall.h"

#include "keep_abi.h"

int32_t keep_hypercall(uint32_t call, uint64_t arg0, uint64_t arg1, uint64_t arg2) {
    volatile struct keep_hc_page *page = (volatile struct keep_hc_page *)KEEP_HC_PAGE_GPA;
    page->magic = KEEP_HC_MAGIC;
    page->version = KEEP_ABI_VERSION;
    page->call = call;
    page->arg[0] = arg0;
    page->arg[1] = arg1;
    page->arg[2] = arg2;
    *(volatile uint32_t *)KEEP_DOORBELL_GPA = KEEP_DOORBELL_RING;
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
