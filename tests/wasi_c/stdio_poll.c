/* The preview-1 calls a C program reaches without a file system, through wasi-libc: sleeping
 * (poll_oneoff with a clock, relative and absolute), poll() on stdio, sched_yield, seeking and
 * stat on stdio, the socket calls on stdio, close. Prints facts and errno values, never times.
 * (isatty is left out: wasmtime answers it by the host's stdio, the keep always says 1; see
 * tests/test_wasi_differential.py::test_stdio_answers_as_wasmtime_on_a_terminal.) */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void report(const char *what, long result) {
    printf("%s: %ld errno %d\n", what, result, result < 0 ? errno : 0);
    errno = 0;
}

int main(void) {
    int64_t start = now_ns(CLOCK_MONOTONIC);
    struct timespec twenty_ms = {0, 20000000};
    report("nanosleep", nanosleep(&twenty_ms, NULL));
    printf("slept at least 20 ms: %d\n", now_ns(CLOCK_MONOTONIC) - start >= 20000000);

    int64_t deadline = now_ns(CLOCK_REALTIME) + 10000000;
    struct timespec until = {(time_t)(deadline / 1000000000), (long)(deadline % 1000000000)};
    report("clock_nanosleep absolute", clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, 0));
    printf("realtime reached the deadline: %d\n", now_ns(CLOCK_REALTIME) >= deadline);

    start = now_ns(CLOCK_MONOTONIC);
    report("poll(nothing, 15 ms)", poll(NULL, 0, 15));
    printf("waited at least 15 ms: %d\n", now_ns(CLOCK_MONOTONIC) - start >= 15000000);

    struct pollfd fds[3] = {{1, POLLOUT, 0}, {2, POLLOUT, 0}, {0, POLLIN, 0}};
    report("poll(stdout, stderr, stdin)", poll(fds, 3, 60000));
    for (int i = 0; i < 3; i++) {
        printf("  fd %d revents %#x\n", fds[i].fd, fds[i].revents);
    }
    report("sched_yield", sched_yield());

    report("lseek(stdout)", (long)lseek(1, 0, SEEK_CUR));
    report("lseek(stdin)", (long)lseek(0, 10, SEEK_SET));
    struct stat st;
    report("fstat(stdout)", fstat(1, &st));
    printf("  size %lld nlink %llu ino %llu\n", (long long)st.st_size,
           (unsigned long long)st.st_nlink, (unsigned long long)st.st_ino);
    report("fstat(7)", fstat(7, &st));
    report("fcntl(stdout, F_GETFL) & O_ACCMODE", fcntl(1, F_GETFL) & O_ACCMODE);
    report("fcntl(stdin, F_GETFL) & O_ACCMODE", fcntl(0, F_GETFL) & O_ACCMODE);

    char byte = 'x';
    report("shutdown(stdout)", shutdown(1, SHUT_RDWR));
    report("send(stdout)", (long)send(1, &byte, 1, 0));
    report("recv(stdin)", (long)recv(0, &byte, 1, 0));
    report("shutdown(9)", shutdown(9, SHUT_RD));
    report("open(/etc/passwd) without preopens", open("/etc/passwd", O_RDONLY));

    report("close(stdin)", close(0));
    report("read(closed stdin)", (long)read(0, &byte, 1));
    report("close(stdin) again", close(0));
    return 0;
}
