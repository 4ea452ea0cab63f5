/* Recursion: naive Fibonacci (calls and returns dominate). */
#include "bench_clock.h"

static uint32_t fib(uint32_t n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char **argv) {
    int reps = bench_repetitions(argc, argv);
    volatile uint32_t n = 32;
    for (int r = 0; r < reps; r++) {
        int64_t start = bench_now_ns();
        uint32_t result = fib(n);
        int64_t end = bench_now_ns();
        printf("fib(%u) = %u\n", n, result);
        bench_report(start, end);
    }
    return 0;
}
