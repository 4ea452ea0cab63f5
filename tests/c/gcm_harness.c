/* Host harness for runtime/guest/ukernel/aes_gcm.c (tests/test_ukernel_gcm.py): the ring-0 object,
 * linked into a static Linux executable without libc, answers one request a line:
 *   E KEY IV AAD PT        ->  CT TAG
 *   D KEY IV AAD CT TAG    ->  PT, or FAIL (and the output buffer is checked untouched)
 * followed by NOT-WIPED if keep_gcm_wipe left any byte of the context. */
#include "aes_gcm.h"
#include "harness_io.h"

static uint8_t key[MAX_FIELD], iv[MAX_FIELD], aad[MAX_FIELD], text[MAX_FIELD], tag[MAX_FIELD];
static uint8_t result[MAX_FIELD], computed_tag[KEEP_GCM_TAG_SIZE];

static void harness_line(const uint8_t *at) {
    uint8_t op = *at++;
    field(&at, key);
    field(&at, iv);
    size_t aad_len = field(&at, aad);
    size_t len = field(&at, text);
    struct keep_gcm gcm;
    keep_gcm_init(&gcm, key);
    if (op == 'E') {
        keep_gcm_seal(&gcm, iv, aad, aad_len, text, len, result, computed_tag);
        put_hex(result, len);
        put(" ", 1);
        put_hex(computed_tag, KEEP_GCM_TAG_SIZE);
    } else {
        field(&at, tag);
        for (size_t i = 0; i < len; i++) {
            result[i] = 0xA5;
        }
        if (keep_gcm_open(&gcm, iv, aad, aad_len, text, len, tag, result) == 0) {
            put_hex(result, len);
        } else {
            int touched = 0;
            for (size_t i = 0; i < len; i++) {
                touched |= result[i] != 0xA5;
            }
            put_str(touched ? "FAIL-WROTE" : "FAIL");
        }
    }
    keep_gcm_wipe(&gcm);
    for (size_t i = 0; i < sizeof gcm; i++) {
        if (((const uint8_t *)&gcm)[i] != 0) {
            put_str(" NOT-WIPED");
            break;
        }
    }
}
