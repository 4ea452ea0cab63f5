/* Boot flow step 2 (ABI version 4): the attestation report, asked for as an SNP guest message
 * (MSG_REPORT_REQ under VMPCK0, through the GHCB) and checked before it leaves private memory:
 * the channel's checks (snp_msg.c), then REPORT_DATA and VMPL against what was asked. Any
 * failure ends the keep here with EXIT KEEP_EXIT_ATTEST_FAILED, the reason, expected and found.
 * The channel is keyed once per boot and keeps its count: a second request (never made by
 * boot.c) would carry the next sequence number, never a used one, as Linux keeps VMPCK0 for the
 * guest's lifetime; the key stays in private memory, as it does in the secrets page. */
#include "ghcb.h"
#include "hypercall.h"
#include "keep_abi.h"
#include "snp_msg.h"

#define REPORT_VMPL 0x30
#define REPORT_REPORT_DATA 0x50
_Static_assert(KEEP_REPORT_SIZE % 8 == 0 && KEEP_BOOT_REPORT_OFFSET % 8 == 0,
               "the report is copied out in whole words");

int keep_attest(const uint8_t report_data[KEEP_REPORT_DATA_SIZE]);

static struct keep_channel channel; /* private (bss): the key schedule never leaves it */
static int channel_keyed;

static __attribute__((noreturn)) void stop(int reason) {
    keep_stop(KEEP_EXIT_ATTEST_FAILED, (uint64_t)reason, channel.expected, channel.found);
}

static int check_report(const uint8_t *report, const uint8_t report_data[KEEP_REPORT_DATA_SIZE]) {
    uint64_t expected = 0, found = 0;
    uint8_t diff = 0;
    for (int i = 0; i < KEEP_REPORT_DATA_SIZE; i++) {
        diff |= report[REPORT_REPORT_DATA + i] ^ report_data[i];
    }
    for (int i = 7; i >= 0; i--) {
        expected = expected << 8 | report_data[i];
        found = found << 8 | report[REPORT_REPORT_DATA + i];
    }
    if (diff != 0) {
        return keep_channel_fail(&channel, KEEP_STOP_REPORT_DATA, expected, found);
    }
    found = report[REPORT_VMPL] | (uint64_t)report[REPORT_VMPL + 1] << 8 |
            (uint64_t)report[REPORT_VMPL + 2] << 16 | (uint64_t)report[REPORT_VMPL + 3] << 24;
    return found == 0 ? 0 : keep_channel_fail(&channel, KEEP_STOP_VMPL, 0, found);
}

int keep_attest(const uint8_t report_data[KEEP_REPORT_DATA_SIZE]) {
    const uint64_t request = KEEP_HC_BUFFER_GPA + KEEP_BOOT_GUEST_REQ_OFFSET;
    const uint64_t response = KEEP_HC_BUFFER_GPA + KEEP_BOOT_GUEST_RSP_OFFSET;
    const uint8_t *report;
    int rc = 0;
    if (!channel_keyed) { /* once: a failed channel stays failed (its key is wiped) */
        channel_keyed = 1;
        rc = keep_channel_init(&channel, (const volatile uint8_t *)KEEP_SECRETS_GPA, 0);
    }
    if (rc == 0) {
        rc = keep_channel_seal_report_request(&channel, report_data, (volatile uint8_t *)request);
    }
    if (rc == 0) {
        uint64_t host = keep_ghcb_guest_request(request, response);
        rc = host == 0 ? 0 : keep_channel_fail(&channel, KEEP_STOP_GHCB, 0, host);
    }
    if (rc == 0) {
        rc = keep_channel_open_report_response(&channel, (const volatile uint8_t *)response,
                                               &report);
    }
    if (rc == 0) {
        rc = check_report(report, report_data);
    }
    if (rc != 0) {
        stop(rc);
    }
    keep_copy_words((volatile void *)(KEEP_HC_BUFFER_GPA + KEEP_BOOT_REPORT_OFFSET), report,
                    KEEP_REPORT_SIZE);
    return 0;
}
