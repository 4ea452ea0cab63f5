/* The doorbell as SEV-SNP needs it: the VMM cannot see guest registers, so a plain store to the
 * doorbell (which has no memory behind it) is not something the host could serve. The guest
 * asks for the write through the GHCB instead (GHCB spec v2, NAE event MMIO Write), and the
 * host still sees "a write of value V at the doorbell": KVM turns the request into the same
 * KVM_EXIT_MMIO as a plain store; on the simulated platform runtime/vmm/ghcb.py does. */
#include "doorbell.h"

#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"

#define INFO(offset) (*(volatile uint64_t *)(KEEP_GHCB_GPA + (offset)))

/* The request itself; returns the stop reason for the host's answer (0: served), *found the
 * offending field. */
static uint64_t mmio_write(uint64_t value, uint32_t size, uint64_t *found) {
    const uint64_t scratch = KEEP_GHCB_GPA + KEEP_GHCB_SHARED_BUFFER_OFFSET;
    *(volatile uint64_t *)scratch = value; /* size 4: the low half, little-endian */
    keep_ghcb_exit(KEEP_SVM_VMGEXIT_MMIO_WRITE, KEEP_DOORBELL_GPA, size, scratch);
    *found = INFO(KEEP_GHCB_SW_EXIT_INFO_1);
    if (*found != 0) {
        return KEEP_STOP_MMIO_EXITINFO1; /* an error, or an exception the host wants injected */
    }
    *found = INFO(KEEP_GHCB_SW_EXIT_INFO_2);
    return *found != 0 ? KEEP_STOP_MMIO_EXITINFO2 : 0;
}

void keep_doorbell(uint64_t value, uint32_t size) {
    if (!keep_ghcb_registered()) {
        keep_platform_early_doorbell(); /* only a stop: a setup failure, or a FAULT */
        return;
    }
    uint64_t found;
    uint64_t reason = mmio_write(value, size, &found);
    if (reason == 0) {
        return;
    }
    /* A host that does not answer the protocol gets one EXIT naming why, whose answer is not
     * checked (keep_stop would ring through here again), and the keep halts. */
    volatile struct keep_hc_page *page =
        keep_hc_prepare(KEEP_HC_EXIT, KEEP_EXIT_ATTEST_FAILED, reason, 0);
    page->arg[3] = found;
    mmio_write(KEEP_DOORBELL_RING, 4, &found);
    keep_halt();
}
