/* SNP guest messages in ring 0 (see snp_msg.h for the contract). */
#include "snp_msg.h"

#include "keep_abi.h"

#define SECRETS_VMPCK0 0x20
#define SECRETS_MSG_SEQNO0 0xA0 /* OS area: u32 MSG_SEQNO_0..3 */
#define VMPCK_COUNT 4
#define HDR_SEQNO 0x20
#define HDR_AAD 0x30
#define HDR_ALGO 0x30
#define HDR_VERSION 0x31
#define HDR_SZ 0x32
#define HDR_TYPE 0x34
#define HDR_MSG_VERSION 0x35
#define HDR_MSG_SZ 0x36
#define HDR_VMPCK 0x3C
#define ALGO_AES_256_GCM 1
#define MSG_REPORT_REQ 5
#define MSG_REPORT_RSP 6
#define MSG_VERSION 1
#define MAX_SEQNO 0xFFFFFFFFull /* Linux keeps the count in a u32 and stops before it wraps */

/* Private memory: the request is sealed here, the response copied here before any check (the VMM
 * may rewrite the shared pages at any moment), the plaintext opened here. */
#define WORDS __attribute__((aligned(8))) /* copied with keep_copy_words */
static uint8_t request[KEEP_MSG_HEADER_SIZE + KEEP_MSG_REPORT_REQ_SIZE] WORDS;
static uint8_t response[KEEP_PAGE_SIZE] WORDS;
static uint8_t plaintext[KEEP_MSG_REPORT_RSP_SIZE] WORDS; /* the report at 0x20: aligned too */
_Static_assert(sizeof request % 8 == 0 &&
                   (KEEP_MSG_HEADER_SIZE + KEEP_MSG_REPORT_RSP_SIZE) % 8 == 0 &&
                   KEEP_BOOT_GUEST_REQ_OFFSET % 8 == 0 && KEEP_BOOT_GUEST_RSP_OFFSET % 8 == 0,
               "the guest messages are copied in whole words");

static uint64_t get_le(const uint8_t *p, int n) {
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--) {
        x = x << 8 | p[i];
    }
    return x;
}

static void put_le(uint8_t *p, uint64_t x, int n) {
    for (int i = 0; i < n; i++) {
        p[i] = (uint8_t)(x >> (8 * i));
    }
}

static void zero(uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        p[i] = 0;
    }
}

void keep_copy_words(volatile void *to, const volatile void *from, uint64_t n) {
    volatile uint64_t *dst = (volatile uint64_t *)to;
    const volatile uint64_t *src = (const volatile uint64_t *)from;
    for (uint64_t i = 0; i < n / 8; i++) {
        dst[i] = src[i];
    }
}

static void message_iv(uint8_t iv[KEEP_GCM_IV_SIZE], uint64_t seqno) {
    put_le(iv, seqno, 8);
    put_le(iv + 8, 0, 4);
}

int keep_channel_fail(struct keep_channel *ch, int reason, uint64_t expected, uint64_t found) {
    keep_gcm_wipe(&ch->gcm);
    ch->usable = 0;
    ch->expected = expected;
    ch->found = found;
    return reason;
}

int keep_channel_init(struct keep_channel *ch, const volatile uint8_t *secrets, uint32_t index) {
    uint8_t key[KEEP_GCM_KEY_SIZE];
    uint8_t any = 0;
    ch->usable = 0;
    ch->vmpck_index = index;
    if (index >= VMPCK_COUNT) {
        return keep_channel_fail(ch, KEEP_STOP_VMPCK, VMPCK_COUNT - 1, index);
    }
    for (int i = 0; i < KEEP_GCM_KEY_SIZE; i++) {
        key[i] = secrets[SECRETS_VMPCK0 + KEEP_GCM_KEY_SIZE * index + i];
        any |= key[i];
    }
    if (any == 0) { /* Linux: an all-zero VMPCK is disabled (snp_is_vmpck_empty) */
        return keep_channel_fail(ch, KEEP_STOP_VMPCK, 1, 0);
    }
    keep_gcm_init(&ch->gcm, key);
    keep_wipe(key, sizeof key);
    ch->last_seqno = (uint64_t)secrets[SECRETS_MSG_SEQNO0 + 4 * index] |
                     (uint64_t)secrets[SECRETS_MSG_SEQNO0 + 4 * index + 1] << 8 |
                     (uint64_t)secrets[SECRETS_MSG_SEQNO0 + 4 * index + 2] << 16 |
                     (uint64_t)secrets[SECRETS_MSG_SEQNO0 + 4 * index + 3] << 24;
    ch->usable = 1;
    return 0;
}

int keep_channel_seal_report_request(struct keep_channel *ch, const uint8_t report_data[64],
                                     volatile uint8_t *out) {
    uint8_t payload[KEEP_MSG_REPORT_REQ_SIZE], iv[KEEP_GCM_IV_SIZE];
    if (!ch->usable) {
        return keep_channel_fail(ch, KEEP_STOP_DISABLED, 1, 0);
    }
    /* The response will carry seqno + 1: both must stay within the count. */
    if (ch->last_seqno + 2 > MAX_SEQNO) {
        return keep_channel_fail(ch, KEEP_STOP_SEQNO_EXHAUSTED, MAX_SEQNO, ch->last_seqno);
    }
    uint64_t seqno = ++ch->last_seqno; /* consumed now, whatever becomes of the request */
    zero(request, sizeof request);
    zero(payload, sizeof payload); /* VMPL 0, KEY_SEL 0 (default key), reserved zero */
    for (int i = 0; i < 64; i++) {
        payload[i] = report_data[i];
    }
    put_le(request + HDR_SEQNO, seqno, 8);
    request[HDR_ALGO] = ALGO_AES_256_GCM;
    request[HDR_VERSION] = 1;
    put_le(request + HDR_SZ, KEEP_MSG_HEADER_SIZE, 2);
    request[HDR_TYPE] = MSG_REPORT_REQ;
    request[HDR_MSG_VERSION] = MSG_VERSION;
    put_le(request + HDR_MSG_SZ, KEEP_MSG_REPORT_REQ_SIZE, 2);
    request[HDR_VMPCK] = (uint8_t)ch->vmpck_index;
    message_iv(iv, seqno);
    keep_gcm_seal(&ch->gcm, iv, request + HDR_AAD, KEEP_MSG_HEADER_SIZE - HDR_AAD, payload,
                  sizeof payload, request + KEEP_MSG_HEADER_SIZE, request);
    keep_copy_words(out, request, sizeof request);
    return 0;
}

/* The header fields that must equal what this guest expects, checked in Linux's order. */
static int check_header(struct keep_channel *ch, uint64_t *msg_sz) {
    const struct {
        int reason, offset, size;
        uint64_t expected;
    } fields[] = {
        {KEEP_STOP_ALGO, HDR_ALGO, 1, ALGO_AES_256_GCM},
        {KEEP_STOP_HDR_VERSION, HDR_VERSION, 1, 1},
        {KEEP_STOP_HDR_SZ, HDR_SZ, 2, KEEP_MSG_HEADER_SIZE},
        {KEEP_STOP_MSG_SEQNO, HDR_SEQNO, 8, ch->last_seqno + 1},
        {KEEP_STOP_MSG_TYPE, HDR_TYPE, 1, MSG_REPORT_RSP},
        {KEEP_STOP_MSG_VERSION, HDR_MSG_VERSION, 1, MSG_VERSION},
        {KEEP_STOP_MSG_VMPCK, HDR_VMPCK, 1, ch->vmpck_index},
        {KEEP_STOP_MSG_SZ, HDR_MSG_SZ, 2, KEEP_MSG_REPORT_RSP_SIZE},
    };
    for (uint64_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uint64_t found = get_le(response + fields[i].offset, fields[i].size);
        if (found != fields[i].expected) {
            return keep_channel_fail(ch, fields[i].reason, fields[i].expected, found);
        }
    }
    *msg_sz = KEEP_MSG_REPORT_RSP_SIZE;
    return 0;
}

int keep_channel_open_report_response(struct keep_channel *ch, const volatile uint8_t *in,
                                      const uint8_t **report) {
    uint8_t iv[KEEP_GCM_IV_SIZE];
    uint64_t msg_sz;
    int rc;
    if (!ch->usable) {
        return keep_channel_fail(ch, KEEP_STOP_DISABLED, 1, 0);
    }
    /* One copy of everything a valid response can hold, then never the shared page again. */
    keep_copy_words(response, in, KEEP_MSG_HEADER_SIZE + KEEP_MSG_REPORT_RSP_SIZE);
    if ((rc = check_header(ch, &msg_sz)) != 0) {
        return rc;
    }
    message_iv(iv, ch->last_seqno + 1);
    if (keep_gcm_open(&ch->gcm, iv, response + HDR_AAD, KEEP_MSG_HEADER_SIZE - HDR_AAD,
                      response + KEEP_MSG_HEADER_SIZE, msg_sz, response, plaintext) != 0) {
        return keep_channel_fail(ch, KEEP_STOP_AUTHTAG, 0, get_le(response, 8));
    }
    ch->last_seqno++; /* the firmware used seqno + 1 for its answer */
    uint64_t status = get_le(plaintext, 4), size = get_le(plaintext + 4, 4);
    if (status != 0) {
        return keep_channel_fail(ch, KEEP_STOP_STATUS, 0, status);
    }
    if (size != KEEP_REPORT_SIZE) {
        return keep_channel_fail(ch, KEEP_STOP_REPORT_SIZE, KEEP_REPORT_SIZE, size);
    }
    *report = plaintext + 0x20;
    return 0;
}
