/* The benchmarks' own clock: each program times only its kernel, so boot, instantiation and
 * compilation never count. Prints "time_ms <ms>" per repetition for bench/bench_run.py. */
#ifndef KEEP_BENCH_CLOCK_H
#define KEEP_BENCH_CLOCK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline int64_t bench_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void bench_report(int64_t start_ns, int64_t end_ns) {
    printf("time_ms %.3f\n", (double)(end_ns - start_ns) / 1e6);
}

/* Repetitions: argv[1], default 5. */
static inline int bench_repetitions(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5;
    return n > 0 ? n : 1;
}

#endif
