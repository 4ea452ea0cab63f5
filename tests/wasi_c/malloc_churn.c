/* malloc/calloc/realloc/free churn over 256 slots with a fixed pseudo-random sequence; every
 * block carries a pattern that is checked before it is resized or freed. Prints a checksum. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOTS 256
static uint64_t state = 0x9E3779B97F4A7C15ull;
static unsigned char *block[SLOTS];
static size_t size[SLOTS];

static uint64_t next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static unsigned char pattern(size_t slot, size_t j) { return (unsigned char)(slot * 31 + j * 7); }

static int intact(size_t slot, size_t n) {
    for (size_t j = 0; j < n; j++) {
        if (block[slot][j] != pattern(slot, j)) {
            return 0;
        }
    }
    return 1;
}

int main(void) {
    uint64_t checksum = 0;
    size_t peak = 0, live = 0;
    for (int round = 0; round < 40000; round++) {
        size_t slot = next() % SLOTS;
        size_t want = next() % 16 == 0 ? next() % 200000 : next() % 512;
        if (block[slot] != NULL && !intact(slot, size[slot])) {
            printf("corrupted block in round %d\n", round);
            return 1;
        }
        switch (next() % 4) {
        case 0:
            free(block[slot]);
            live -= size[slot];
            block[slot] = NULL;
            size[slot] = 0;
            continue;
        case 1: {
            unsigned char *grown = realloc(block[slot], want + 1);
            if (grown == NULL) {
                printf("realloc failed\n");
                return 1;
            }
            block[slot] = grown;
            break;
        }
        case 2:
            free(block[slot]);
            block[slot] = calloc(want + 1, 1);
            if (block[slot] == NULL) {
                printf("calloc failed\n");
                return 1;
            }
            for (size_t j = 0; j <= want; j++) {
                if (block[slot][j] != 0) {
                    printf("calloc memory is not zero\n");
                    return 1;
                }
            }
            size[slot] = 0;
            break;
        default:
            free(block[slot]);
            block[slot] = malloc(want + 1);
            if (block[slot] == NULL) {
                printf("malloc failed\n");
                return 1;
            }
            size[slot] = 0;
            break;
        }
        size_t keep = size[slot] < want + 1 ? size[slot] : want + 1;
        for (size_t j = keep; j <= want; j++) {
            block[slot][j] = pattern(slot, j);
        }
        live = live - size[slot] + want + 1;
        size[slot] = want + 1;
        peak = live > peak ? live : peak;
        checksum = checksum * 1000003u + want;
    }
    for (size_t slot = 0; slot < SLOTS; slot++) {
        if (block[slot] != NULL && !intact(slot, size[slot])) {
            printf("corrupted block at the end\n");
            return 1;
        }
        free(block[slot]);
    }
    void *large = malloc(8u << 20);
    printf("churn ok: checksum %016llx, peak %zu bytes live, large block %s\n",
           (unsigned long long)checksum, peak, large != NULL ? "ok" : "failed");
    free(large);
    return 0;
}
