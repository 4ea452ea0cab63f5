/* SNP Guest Request through the GHCB: the same code on every platform; only the exit itself
 * (keep_platform_vmgexit) is the platform's. */
#include "ghcb.h"

#include "keep_abi.h"

static void ghcb_set(volatile uint8_t *ghcb, uint32_t offset, uint64_t value) {
    *(volatile uint64_t *)(ghcb + offset) = value;
    volatile uint64_t *bitmap = (volatile uint64_t *)(ghcb + KEEP_GHCB_VALID_BITMAP);
    uint32_t bit = offset / 8;
    bitmap[bit / 64] |= 1ull << (bit % 64);
}

uint64_t keep_ghcb_guest_request(uint64_t request_gpa, uint64_t response_gpa) {
    volatile uint8_t *ghcb = (volatile uint8_t *)KEEP_GHCB_GPA;
    volatile uint64_t *bitmap = (volatile uint64_t *)(ghcb + KEEP_GHCB_VALID_BITMAP);
    bitmap[0] = 0; /* nothing left valid from an earlier exit */
    bitmap[1] = 0;
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_CODE, KEEP_SVM_VMGEXIT_GUEST_REQUEST);
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_INFO_1, request_gpa);
    ghcb_set(ghcb, KEEP_GHCB_SW_EXIT_INFO_2, response_gpa);
    *(volatile uint16_t *)(ghcb + KEEP_GHCB_PROTOCOL_VERSION) = KEEP_GHCB_VERSION;
    *(volatile uint32_t *)(ghcb + KEEP_GHCB_USAGE) = 0;
    keep_platform_vmgexit(KEEP_GHCB_GPA);
    return *(volatile uint64_t *)(ghcb + KEEP_GHCB_SW_EXIT_INFO_2);
}
