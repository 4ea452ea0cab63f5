/* The boot flow: register the GHCB and share the host's pages (ghcb.c), check the C-bit
 * (cbit.c), make the heap and stack private and validated (pvalidate.c), get REPORT_DATA,
 * request the attestation report as an SNP guest message (attest.c), hand it to the runner,
 * enter ring 3. Nothing else: every ring-0 instruction is
 * emulated on PVM, and the toolchain already built the tables. */
#include "cbit.h"
#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"
#include "pvalidate.h"

int keep_attest(const uint8_t report_data[KEEP_REPORT_DATA_SIZE]);

__attribute__((noreturn)) void keep_enter_user(uint64_t entry, uint64_t stack_top, uint64_t info);
__attribute__((noreturn)) void keep_main(void);
int keep_report_data(const struct keep_user_info *info);

/* Keep the REPORT_DATA about to be attested in private memory, the top 64 bytes of the ring-3
 * stack, where ring 3 checks its inputs against it (ABI.md, boot flow 2). Volatile word copies:
 * no memcpy call and no SSE in ring 0. Returns 0 (for the boot flow's chain of steps). */
int keep_report_data(const struct keep_user_info *info) {
    volatile uint64_t *kept = (volatile uint64_t *)(info->stack_top - KEEP_REPORT_DATA_SIZE);
    const volatile uint64_t *shared =
        (const volatile uint64_t *)(KEEP_HC_BUFFER_GPA + KEEP_BOOT_REPORT_DATA_OFFSET);
    for (int i = 0; i < KEEP_REPORT_DATA_SIZE / 8; i++) {
        kept[i] = shared[i];
    }
    return 0;
}

void keep_main(void) {
    /* Built and measured by the toolchain: trusted, and never written at run time. */
    const struct keep_user_info *info = (const struct keep_user_info *)KEEP_USER_INFO_GPA;

    keep_ghcb_setup(); /* before the first use of the hypercall page or the GHCB */
    keep_check_c_bit(info);  /* the tables' C-bit is the CPU's, before private RAM is used */
    keep_validate_ram(info); /* before the first write to the stack (keep_report_data) */

    /* The guest message is sealed from the private copy (the shared buffer's REPORT_DATA may
     * have changed since); ATTEST hands the checked report to the runner, which may stop us. */
    if (keep_hypercall(KEEP_HC_REPORT_DATA, KEEP_BOOT_REPORT_DATA_OFFSET, 0, 0) != 0 ||
        keep_report_data(info) != 0 ||
        keep_attest((const uint8_t *)(info->stack_top - KEEP_REPORT_DATA_SIZE)) != 0 ||
        keep_hypercall(KEEP_HC_ATTEST, KEEP_BOOT_REPORT_DATA_OFFSET, 0, KEEP_BOOT_REPORT_OFFSET) != 0) {
        keep_exit(KEEP_EXIT_ATTEST_FAILED);
    }
    keep_enter_user(info->entry, info->stack_top, KEEP_USER_INFO_GPA);
}
