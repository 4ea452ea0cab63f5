/* Host harness for runtime/guest/ukernel/cbit.c (tests/test_ukernel_cbit.py), one command a
 * line:
 *   K TABLE C_BIT  ->  OK, or STOP status reason expected found (keep_stop: the run ends there)
 * TABLE is the CPUID page (keep_platform_cpuid_table returns it), C_BIT the user-info field
 * (8 bytes, big-endian hex). */
#include "cbit.h"
#include "harness_io.h"
#include "hypercall.h"
#include "keep_abi.h"

static uint8_t table[0x1000], data[MAX_FIELD];

const volatile uint8_t *keep_platform_cpuid_table(void) {
    return table;
}

void keep_stop(uint64_t status, uint64_t reason, uint64_t expected, uint64_t found) {
    const uint64_t words[4] = {status, reason, expected, found};
    put_str("STOP");
    for (int i = 0; i < 4; i++) {
        put(" ", 1);
        put_u64(words[i]);
    }
    put("\n", 1);
    sys3(1, 1, (long)output, (long)out_len);
    sys3(60, 0, 0, 0);
    __builtin_unreachable();
}

static void harness_line(const uint8_t *at) {
    at++; /* 'K' */
    size_t n = field(&at, data);
    for (size_t i = 0; i < sizeof table; i++) {
        table[i] = i < n ? data[i] : 0;
    }
    uint8_t be[8];
    field(&at, be);
    struct keep_user_info info = {0};
    for (int i = 0; i < 8; i++) {
        info.c_bit = (uint16_t)(info.c_bit << 8 | be[i]);
    }
    keep_check_c_bit(&info);
    put_str("OK");
}
