/* Host harness for runtime/guest/ukernel/snp_msg.c (tests/test_ukernel_guest_msg.py): one
 * channel, one command a line:
 *   I SECRETS INDEX   ->  OK | ERR reason expected found      (INDEX: one hex byte)
 *   S REPORT_DATA     ->  the sealed request (header + ciphertext) | ERR ...
 *   R RESPONSE        ->  OK REPORT | ERR reason expected found
 * followed by WIPED when the channel's key schedule is all zero afterwards. */
#include "harness_io.h"
#include "keep_abi.h"
#include "snp_msg.h"

static struct keep_channel channel;
static uint8_t data[MAX_FIELD], page[0x1000];

static void error(int rc) {
    put_str("ERR ");
    put_u64((uint64_t)rc);
    put(" ", 1);
    put_u64(channel.expected);
    put(" ", 1);
    put_u64(channel.found);
}

static void harness_line(const uint8_t *at) {
    uint8_t op = *at++;
    size_t n = field(&at, data);
    const uint8_t *report;
    int rc;
    if (op == 'I') {
        uint8_t index[1];
        field(&at, index);
        rc = keep_channel_init(&channel, data, index[0]);
        if (rc == 0) {
            put_str("OK");
        }
    } else if (op == 'S') {
        rc = keep_channel_seal_report_request(&channel, data, page);
        if (rc == 0) {
            put_hex(page, KEEP_MSG_HEADER_SIZE + KEEP_MSG_REPORT_REQ_SIZE);
        }
    } else {
        for (size_t i = 0; i < sizeof page; i++) {
            page[i] = i < n ? data[i] : 0;
        }
        rc = keep_channel_open_report_response(&channel, page, &report);
        if (rc == 0) {
            put_str("OK ");
            put_hex(report, KEEP_REPORT_SIZE);
        }
    }
    if (rc != 0) {
        error(rc);
    }
    uint8_t any = 0;
    for (size_t i = 0; i < sizeof channel.gcm; i++) {
        any |= ((const uint8_t *)&channel.gcm)[i];
    }
    if (any == 0) {
        put_str(" WIPED");
    }
}
