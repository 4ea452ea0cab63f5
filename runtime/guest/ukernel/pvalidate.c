/* Private RAM for ring 3: the heap and stack were not launched, so on SEV-SNP their pages are
 * neither assigned to the guest nor validated. Before ring 3 runs (and before the microkernel
 * keeps REPORT_DATA at the top of the stack) they are changed to private with the GHCB Page
 * State Change NAE event, then validated with PVALIDATE (Linux arch/x86/coco/sev/core.c
 * __set_pages_state, pvalidate_pages): 2 MiB at a time where a range is 2 MiB aligned, 4 KiB
 * pages at its unaligned head and tail and wherever the RMP answers FAIL_SIZEMISMATCH.
 *
 * The host is not trusted with any of it: a PSC answer with an error, or a header whose
 * end_entry changed or whose cur_entry did not advance, stops the keep; so does any PVALIDATE
 * failure, and CF=1 above all: a page that is validated already was validated before, for
 * this GPA or another one the host has since remapped here, so its contents are the host's
 * choice. Shared code on every platform: only PVALIDATE itself is the platform's (platform.c). */
#include "pvalidate.h"

#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"

#define LARGE_PAGE 0x200000ull
#define PSC_ENTRY_LARGE (1ull << 56)
#define PSC_GFN_MASK 0xFFFFFFFFFF000ull /* bits 51:12 */
#define PVALIDATE_CF (1ull << 32)

/* The descriptor lives in the GHCB's shared buffer: header, then the entries. */
#define PSC_DESCRIPTOR_GPA (KEEP_GHCB_GPA + KEEP_GHCB_SHARED_BUFFER_OFFSET)
static volatile uint64_t *const psc = (volatile uint64_t *)PSC_DESCRIPTOR_GPA;
static uint64_t psc_entries;

/* EXIT(125, reason, expected, found) naming the GPA in argument 4. */
static __attribute__((noreturn)) void stop_at(uint64_t reason, uint64_t expected, uint64_t found,
                                              uint64_t gpa) {
    volatile struct keep_hc_page *page = (volatile struct keep_hc_page *)KEEP_HC_PAGE_GPA;
    page->arg[4] = gpa;
    keep_stop(KEEP_EXIT_ATTEST_FAILED, reason, expected, found);
}

/* The largest piece at gpa that fits [gpa, end): 2 MiB where aligned, else 4 KiB. */
static uint64_t piece(uint64_t gpa, uint64_t end) {
    return gpa % LARGE_PAGE == 0 && end - gpa >= LARGE_PAGE ? LARGE_PAGE : KEEP_PAGE_SIZE;
}

/* Send the entries gathered so far, as many exits as the host needs, checking each answer. */
static void psc_flush(void) {
    if (psc_entries == 0) {
        return;
    }
    const uint64_t end = psc_entries - 1;
    uint64_t cur = 0;
    psc[0] = end << 16; /* cur_entry 0, end_entry, reserved 0 */
    while (cur <= end) {
        uint64_t gpa = psc[1 + cur] & PSC_GFN_MASK;
        uint64_t host = keep_ghcb_psc(PSC_DESCRIPTOR_GPA);
        uint64_t header = psc[0];
        if (host != 0) {
            stop_at(KEEP_STOP_PSC_NAE, 0, host, gpa);
        }
        if (header >> 16 != end) { /* end_entry and the reserved word, unchanged */
            stop_at(KEEP_STOP_PSC_END_ENTRY, end, header >> 16, gpa);
        }
        if ((header & 0xFFFF) <= cur) { /* no progress: never loop on the host's word */
            stop_at(KEEP_STOP_PSC_CUR_ENTRY, cur + 1, header & 0xFFFF, gpa);
        }
        cur = header & 0xFFFF;
    }
    psc_entries = 0;
}

static void psc_private(uint64_t start, uint64_t end) {
    for (uint64_t gpa = start, size; gpa < end; gpa += size) {
        size = piece(gpa, end);
        psc[1 + psc_entries] = (uint64_t)KEEP_PSC_PRIVATE << 52 | gpa |
                               (size == LARGE_PAGE ? PSC_ENTRY_LARGE : 0);
        if (++psc_entries == KEEP_PSC_MAX_ENTRY) {
            psc_flush();
        }
    }
}

/* CF first, as Linux: CF=1 means the RMP entry was not changed, whatever EAX says. */
static void check_pvalidate(uint64_t result, uint64_t gpa) {
    if (result & PVALIDATE_CF) {
        stop_at(KEEP_STOP_PVALIDATE_UNCHANGED, 0, 1, gpa);
    }
    if ((uint32_t)result != 0) {
        stop_at(KEEP_STOP_PVALIDATE, 0, (uint32_t)result, gpa);
    }
}

static void validate(uint64_t start, uint64_t end) {
    for (uint64_t gpa = start, size; gpa < end; gpa += size) {
        size = piece(gpa, end);
        uint64_t result = keep_platform_pvalidate(gpa, size == LARGE_PAGE, 1);
        if (size == LARGE_PAGE && result == KEEP_PVALIDATE_FAIL_SIZEMISMATCH) {
            /* The RMP holds 4 KiB entries here (the host did not, or could not, use a 2 MiB
             * page): validate each of them; they must all change. */
            for (uint64_t page = gpa; page < gpa + LARGE_PAGE; page += KEEP_PAGE_SIZE) {
                check_pvalidate(keep_platform_pvalidate(page, 0, 1), page);
            }
            continue;
        }
        check_pvalidate(result, gpa);
    }
}

void keep_validate_ram(const struct keep_user_info *info) {
    psc_private(info->heap_start, info->heap_end);
    psc_private(info->stack_bottom, info->stack_top);
    psc_flush();
    validate(info->heap_start, info->heap_end);
    validate(info->stack_bottom, info->stack_top);
}
