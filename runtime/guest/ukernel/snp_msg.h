/* The guest's end of the SNP guest-message channel on one VMPCK (ring 0).
 *
 * Layout and rules as toolchain/snp/guest_msg.py (Linux v6.12 sev-guest.h / sev-guest.c): a
 * 0x60-byte header, AES-256-GCM under the VMPCK, AAD = header bytes 0x30..0x5F, IV = MSG_SEQNO
 * little-endian. Contract: sequence numbers never repeat (a request consumes one even if it is
 * never answered; the answer carries the next); a request is sealed in private memory and only
 * then copied out, a response is copied into private memory before any check, and every
 * header field, the tag, STATUS and REPORT_SIZE are checked before the report is handed out. On
 * ANY failure the key schedule is wiped and the channel refuses all further use. Every failure
 * returns a KEEP_STOP_* reason with the expected and found values in the channel. */
#ifndef KEEP_SNP_MSG_H
#define KEEP_SNP_MSG_H
#include <stdint.h>

#include "aes_gcm.h"

#define KEEP_MSG_HEADER_SIZE 0x60
#define KEEP_MSG_REPORT_REQ_SIZE 96
#define KEEP_MSG_REPORT_RSP_SIZE 1216 /* STATUS, REPORT_SIZE, 24 reserved, the 0x4A0 report */
#define KEEP_MSG_MAX_SIZE (0x1000 - KEEP_MSG_HEADER_SIZE - KEEP_GCM_TAG_SIZE)

struct keep_channel {
    struct keep_gcm gcm;
    uint64_t last_seqno; /* the last sequence number used on this VMPCK */
    uint32_t vmpck_index;
    uint32_t usable;
    uint64_t expected, found; /* of the last failure */
};

/* Key the channel with VMPCK`index` of the secrets page, continuing its OS-area count. */
int keep_channel_init(struct keep_channel *ch, const volatile uint8_t *secrets, uint32_t index);
/* Seal MSG_REPORT_REQ (REPORT_DATA, VMPL 0, KEY_SEL 0) into the shared page `out`. */
int keep_channel_seal_report_request(struct keep_channel *ch, const uint8_t report_data[64],
                                     volatile uint8_t *out);
/* Check and open MSG_REPORT_RSP from the shared page `in`; *report points to the 0x4A0-byte
 * report in private memory, valid until the next call. */
int keep_channel_open_report_response(struct keep_channel *ch, const volatile uint8_t *in,
                                      const uint8_t **report);
/* Copy n bytes, a multiple of 8 between 8-byte aligned buffers, one 64-bit volatile access
 * each (one of the two is shared memory: each word is read or written exactly once, and a byte
 * loop would cost eight times the emulated ring-0 instructions). */
void keep_copy_words(volatile void *to, const volatile void *from, uint64_t n);
/* Record a failure found outside the channel (e.g. the transport): wipes the key too. */
int keep_channel_fail(struct keep_channel *ch, int reason, uint64_t expected, uint64_t found);

#endif
