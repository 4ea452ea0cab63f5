/* SHA-256 over 4 MiB, the same code the differential tests check against hashlib. */
#include "bench_clock.h"
#include "sha256.h"

#define SIZE (4u << 20)

int main(int argc, char **argv) {
    int reps = bench_repetitions(argc, argv);
    unsigned char *data = malloc(SIZE);
    if (data == NULL) {
        printf("out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < SIZE; i++) {
        data[i] = (unsigned char)(i * 2654435761u >> 24);
    }
    for (int r = 0; r < reps; r++) {
        struct sha256 s;
        unsigned char digest[32];
        char hex[65];
        int64_t start = bench_now_ns();
        sha256_init(&s);
        sha256_update(&s, data, SIZE);
        sha256_final(&s, digest);
        int64_t end = bench_now_ns();
        sha256_hex(digest, hex);
        printf("sha256(4 MiB) = %s\n", hex);
        bench_report(start, end);
    }
    free(data);
    return 0;
}
