/* The page tables were built by the toolchain for one C-bit position (the snp plan's c_bit,
 * declared in the measured user-info page); the CPU's is CPUID 0x8000001F EBX[5:0], which an
 * SNP guest reads from the CPUID page (the firmware checked its values at LAUNCH_UPDATE; CPUID
 * itself would be the host's answer through #VC). Were they to differ, every private mapping
 * would set the wrong physical-address bit: stop before anything else touches private RAM.
 * Table layout: Linux asm/sev.h struct snp_cpuid_table (u32 count, 12 bytes reserved, then
 * 0x30-byte functions: u32 eax_in, ecx_in, u64 xcr0_in, xss_in, u32 eax, ebx, ecx, edx). */
#include "cbit.h"

#include "hypercall.h"
#include "keep_abi.h"

#define CPUID_TABLE_FUNCTIONS 0x10
#define CPUID_FUNCTION_SIZE 0x30
#define CPUID_FUNCTION_EBX 0x1C

uint64_t keep_cpuid_check_c_bit(const volatile uint8_t *table, uint64_t c_bit, uint64_t *found) {
    uint32_t count = *(const volatile uint32_t *)table;
    *found = count;
    if (count > KEEP_CPUID_COUNT_MAX) {
        return KEEP_STOP_CPUID_LEAF;
    }
    for (uint32_t i = 0; i < count; i++) {
        const volatile uint8_t *function =
            table + CPUID_TABLE_FUNCTIONS + (uint64_t)i * CPUID_FUNCTION_SIZE;
        if (*(const volatile uint32_t *)function != KEEP_CPUID_LEAF_SEV) {
            continue;
        }
        *found = *(const volatile uint32_t *)(function + CPUID_FUNCTION_EBX) & 0x3F;
        return *found == c_bit ? 0 : KEEP_STOP_C_BIT;
    }
    return KEEP_STOP_CPUID_LEAF;
}

void keep_check_c_bit(const struct keep_user_info *info) {
    const volatile uint8_t *table = keep_platform_cpuid_table();
    if (table == 0) {
        return;
    }
    uint64_t found = 0;
    uint64_t reason = keep_cpuid_check_c_bit(table, info->c_bit, &found);
    if (reason == KEEP_STOP_CPUID_LEAF) {
        keep_stop(KEEP_EXIT_ATTEST_FAILED, reason, KEEP_CPUID_LEAF_SEV, found);
    }
    if (reason != 0) {
        keep_stop(KEEP_EXIT_ATTEST_FAILED, reason, info->c_bit, found);
    }
}
