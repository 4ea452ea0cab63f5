/* Tight integer loops: Collatz chain lengths (branches, shifts, 64-bit arithmetic) and a
 * 32-bit multiply-xorshift mixing loop, no memory traffic beyond a few locals. */
#include "bench_clock.h"

int main(int argc, char **argv) {
    int reps = bench_repetitions(argc, argv);
    volatile uint32_t limit = 300000;
    for (int r = 0; r < reps; r++) {
        int64_t start = bench_now_ns();
        uint32_t longest = 0, longest_start = 0;
        for (uint32_t i = 1; i < limit; i++) {
            uint64_t x = i;
            uint32_t steps = 0;
            while (x != 1) {
                x = (x & 1) ? 3 * x + 1 : x >> 1;
                steps++;
            }
            if (steps > longest) {
                longest = steps;
                longest_start = i;
            }
        }
        uint32_t h = 0x811c9dc5u;
        for (uint32_t i = 0; i < 20000000u; i++) {
            h = (h ^ i) * 0x01000193u;
            h ^= h >> 13;
        }
        int64_t end = bench_now_ns();
        printf("collatz longest below %u: %u steps from %u; mix %08x\n", limit, longest,
               longest_start, h);
        bench_report(start, end);
    }
    return 0;
}
