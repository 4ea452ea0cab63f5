/* The C-bit the page tables were built with, checked against the CPU's (cbit.c). */
#ifndef KEEP_CBIT_H
#define KEEP_CBIT_H
#include <stdint.h>

#include "keep_abi.h"

/* 0 when the CPUID table's function 0x8000001F has EBX[5:0] == c_bit; else the KEEP_STOP_*
 * reason, with *found: the table's count (no such function, or a count over 64) or EBX[5:0]. */
uint64_t keep_cpuid_check_c_bit(const volatile uint8_t *table, uint64_t c_bit, uint64_t *found);

/* Stop the keep (EXIT 125, KEEP_STOP_CPUID_LEAF / KEEP_STOP_C_BIT) unless the CPUID page's
 * C-bit is the one of the measured user-info page; nothing where the platform has no CPUID
 * page to read (keep_platform_cpuid_table returns 0: the simulated platform). */
void keep_check_c_bit(const struct keep_user_info *info);

/* The platform layer (platform.c): the SNP CPUID page, or 0 where the platform fills none. */
const volatile uint8_t *keep_platform_cpuid_table(void);

#endif
