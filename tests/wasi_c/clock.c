/* Clocks: monotonic never goes back and advances over real work; realtime is after 2020;
 * the resolution is positive. Prints only facts, never the times themselves. */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static int64_t ns(clockid_t id) {
    struct timespec t;
    if (clock_gettime(id, &t) != 0) {
        return -1;
    }
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int main(void) {
    int64_t previous = ns(CLOCK_MONOTONIC);
    int backwards = 0;
    for (int i = 0; i < 100; i++) {
        int64_t now = ns(CLOCK_MONOTONIC);
        backwards += now < previous;
        previous = now;
    }
    int64_t start = ns(CLOCK_MONOTONIC);
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < 20000000; i++) {
        sink += i * i;
    }
    int64_t end = ns(CLOCK_MONOTONIC);
    struct timespec res;
    int res_ok = clock_getres(CLOCK_MONOTONIC, &res) == 0 && (res.tv_sec > 0 || res.tv_nsec > 0);
    printf("monotonic readable: %s\n", previous > 0 ? "yes" : "no");
    printf("monotonic went backwards: %d times\n", backwards);
    printf("monotonic advanced over work: %s\n", end > start ? "yes" : "no");
    printf("realtime after 2020: %s\n", ns(CLOCK_REALTIME) > INT64_C(1577836800) * 1000000000 ? "yes" : "no");
    printf("resolution positive: %s\n", res_ok ? "yes" : "no");
    printf("time() after 2020: %s\n", time(NULL) > 1577836800 ? "yes" : "no");
    return 0;
}
