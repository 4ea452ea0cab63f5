/* The boot flow: get REPORT_DATA, request the attestation report, enter ring 3. Nothing else:
 * every ring-0 instruction is emulated on PVM, and the toolchain already built the tables. */
#include "hypercall.h"
#include "keep_abi.h"

/* Status the keep exits with when the attestation step fails (before ring 3 runs). */
#define KEEP_EXIT_ATTEST_FAILED 125

__attribute__((noreturn)) void keep_enter_user(uint64_t entry, uint64_t stack_top, uint64_t info);
__attribute__((noreturn)) void keep_main(void);

void keep_main(void) {
    /* Built and measured by the toolchain: trusted, and never written at run time. */
    const struct keep_user_info *info = (const struct keep_user_info *)KEEP_USER_INFO_GPA;

    if (keep_hypercall(KEEP_HC_REPORT_DATA, KEEP_BOOT_REPORT_DATA_OFFSET, 0, 0) != 0 ||
        keep_hypercall(KEEP_HC_ATTEST, KEEP_BOOT_REPORT_DATA_OFFSET, 0, KEEP_BOOT_REPORT_OFFSET) != 0) {
        keep_exit(KEEP_EXIT_ATTEST_FAILED);
    }
    keep_enter_user(info->entry, info->stack_top, KEEP_USER_INFO_GPA);
}
