/* printf and friends: integers, strings, floats in every conversion, widths, precisions, flags. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    printf("hello from C in a keep\n");
    printf("[%d] [%5d] [%-5d] [%05d] [%+d] [% d]\n", 42, 42, 42, 42, 42, 42);
    printf("[%i] [%u] [%x] [%X] [%#x] [%o] [%#o]\n", -17, 4000000000u, 0xbeef, 0xbeef, 255, 8, 8);
    printf("[%lld] [%llu] [%" PRIx64 "] [%" PRId64 "]\n", (long long)INT64_MIN,
           (unsigned long long)UINT64_MAX, UINT64_C(0x0123456789abcdef), INT64_C(-1));
    printf("[%hhd] [%hd] [%zu] [%td]\n", (signed char)200, (short)70000, sizeof(long double),
           (ptrdiff_t)-3);
    printf("[%s] [%10s] [%-10s] [%.3s] [%c] [%%]\n", "keep", "keep", "keep", "keepstack", 'K');
    double values[] = {0.0, -0.0, 1.0, -1.5, 3.141592653589793, 1e-300, 6.02214076e23, 1.0 / 3.0,
                       123456789.123456789, 5e-324};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        double v = values[i];
        printf("%.17g | %f | %.3e | %g | %a | %12.4f | %-12.2E|\n", v, v, v, v, v, v, v);
    }
    printf("[%f] [%f] [%f]\n", 1.0 / 0.0, -1.0 / 0.0, 0.0 / 0.0 * 0.0);
    printf("[%.0f] [%.0f] [%.0f] [%.1f]\n", 0.5, 1.5, 2.5, 0.25);
    char buffer[64];
    int n = snprintf(buffer, sizeof buffer, "%s-%08.3f-%x", "snprintf", 2.0 / 7.0, 48879);
    printf("snprintf wrote %d: %s\n", n, buffer);
    n = snprintf(buffer, 8, "%s", "truncated output");
    printf("truncated to %zu of %d: %s\n", strlen(buffer), n, buffer);
    fputs("fputs line\n", stdout);
    puts("puts line");
    for (char c = 'a'; c <= 'e'; c++) {
        putchar(c);
    }
    putchar('\n');
    fprintf(stderr, "to stderr\n");
    return 0;
}
