/* The GHCB's setup through the GHCB MSR protocol (GHCB spec v2 §2.3.1), and the NAE events
 * SNP Guest Request and Page State Change through the GHCB: the same code on every platform;
 * only the exits themselves (keep_platform_vmgexit, keep_platform_ghcb_msr) are the platform's. */
#include "ghcb.h"

#include "hypercall.h"
#include "keep_abi.h"

#define GHCB_INFO(msr) ((msr) & 0xFFFu)

static __attribute__((noreturn)) void setup_stop(uint64_t reason, uint64_t expected, uint64_t found) {
    keep_stop(KEEP_EXIT_ATTEST_FAILED, reason, expected, found);
}

static int registered; /* set once the host accepted the GHCB's GPA */

/* The host must answer 0x13 naming our GFN: any other GFN (all ones: refused) means the host
 * will not serve this GHCB, and a GHCB it does not serve cannot carry the guest request. */
static void register_ghcb(void) {
    const uint64_t gfn = KEEP_GHCB_GPA >> 12;
    uint64_t answer = keep_platform_ghcb_msr(gfn << 12 | KEEP_GHCB_MSR_REG_GPA_REQ);
    if (GHCB_INFO(answer) != KEEP_GHCB_MSR_REG_GPA_RESP) {
        setup_stop(KEEP_STOP_GHCB_REG_INFO, KEEP_GHCB_MSR_REG_GPA_RESP, GHCB_INFO(answer));
    }
    if (answer >> 12 != gfn) {
        setup_stop(KEEP_STOP_GHCB_REG_GFN, gfn, answer >> 12);
    }
    registered = 1;
}

int keep_ghcb_registered(void) { return registered; }

/* Page-state change to shared of the 4 KiB page at gpa: response 0x15, error code (63:32) 0. */
static void make_shared(uint64_t gpa) {
    uint64_t request = (uint64_t)KEEP_PSC_SHARED << 52 | (gpa >> 12) << 12 | KEEP_GHCB_MSR_PSC_REQ;
    uint64_t answer = keep_platform_ghcb_msr(request);
    if (GHCB_INFO(answer) != KEEP_GHCB_MSR_PSC_RESP) {
        setup_stop(KEEP_STOP_PSC_INFO, KEEP_GHCB_MSR_PSC_RESP, GHCB_INFO(answer));
    }
    if (answer >> 32 != 0) {
        setup_stop(KEEP_STOP_PSC_ERROR, 0, answer >> 32);
    }
}

void keep_ghcb_setup(void) {
    /* The hypercall page first: it is where a stop is reported. */
    make_shared(KEEP_HC_PAGE_GPA);
    register_ghcb();
    make_shared(KEEP_GHCB_GPA);
    for (uint64_t page = 0; page < KEEP_HC_BUFFER_SIZE; page += KEEP_PAGE_SIZE) {
        make_shared(KEEP_HC_BUFFER_GPA + page);
    }
}

static void ghcb_set(volatile uint8_t *ghcb, uint32_t offset, uint64_t value) {
    *(volatile uint64_t *)(ghcb + offset) = value;
    volatile uint64_t *bitmap = (volatile uint64_t *)(ghcb + KEEP_GHCB_VALID_BITMAP);
    uint32_t bit = offset / 8;
    bitmap[bit / 64] |= 1ull << (bit % 64);
}

void keep_ghcb_exit(uint64_t exit_code, uint64_t info1, uint64_t info2, uint64_t scratch) {
    volatile uint8_t *ghcb = (volatile uint8_t *)KEEP_GHCB_GPA;
    volatile uint64_t *bitmap = (volatile uint64_t *)(ghcb + KEEP_GHCB_VALID_BITMAP);
    bitmap[0] = 0;
    bitmap[1] = 0;
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_CODE, exit_code);
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_INFO_1, info1);
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_INFO_2, info2);
    if (scratch != 0) {
        ghcb_set(ghcb, KEEP_GHCB_SW_SCRATCH, scratch);
    }
    *(volatile uint16_t *)(ghcb + KEEP_GHCB_PROTOCOL_VERSION) = KEEP_GHCB_VERSION;
    *(volatile uint32_t *)(ghcb + KEEP_GHCB_USAGE) = 0;
    keep_platform_vmgexit(KEEP_GHCB_GPA);
}

uint64_t keep_ghcb_guest_request(uint64_t request_gpa, uint64_t response_gpa) {
    keep_ghcb_exit(KEEP_SVM_VMGEXIT_GUEST_REQUEST, request_gpa, response_gpa, 0);
    return *(volatile uint64_t *)(KEEP_GHCB_GPA + KEEP_GHCB_SW_EXIT_INFO_2);
}

uint64_t keep_ghcb_psc(uint64_t descriptor_gpa) {
    keep_ghcb_exit(KEEP_SVM_VMGEXIT_PSC, 0, 0, descriptor_gpa);
    return *(volatile uint64_t *)(KEEP_GHCB_GPA + KEEP_GHCB_SW_EXIT_INFO_2);
}
