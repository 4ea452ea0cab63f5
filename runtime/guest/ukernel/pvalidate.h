/* The heap and stack of ring 3 made private and validated (pvalidate.c). */
#ifndef KEEP_PVALIDATE_H
#define KEEP_PVALIDATE_H
#include <stdint.h>

#include "keep_abi.h"

/* Page-state change to private, then PVALIDATE, of [heap_start, heap_end) and
 * [stack_bottom, stack_top) of the measured user-info page: the RAM the launch did not cover.
 * Any failure stops the keep (EXIT 125, KEEP_STOP_PSC_* / KEEP_STOP_PVALIDATE*, the GPA in
 * argument 4). Call after keep_ghcb_setup and before the first write to the stack. */
void keep_validate_ram(const struct keep_user_info *info);

/* The platform layer (platform.c): PVALIDATE of the page at va (page size 1: 2 MiB), validate
 * 1 or 0. Returns EAX in bits 31:0 and rFLAGS.CF in bit 32. */
uint64_t keep_platform_pvalidate(uint64_t va, uint32_t page_size, uint32_t validate);

#endif
