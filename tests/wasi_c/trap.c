/* A deliberate trap, chosen by argv[1]: abort (wasm unreachable), oob (a store far outside
 * linear memory), divzero (integer division by zero). Output before the trap is flushed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *kind = argc > 1 ? argv[1] : "abort";
    printf("about to trap: %s\n", kind);
    fflush(stdout);
    if (strcmp(kind, "oob") == 0) {
        volatile uintptr_t far = 0xfffffff0u;
        *(volatile int *)far = 1;
    } else if (strcmp(kind, "divzero") == 0) {
        /* Both operands unknown: clang turns 1 / x into a select, which never traps. */
        volatile int seven = 7, zero = 0;
        printf("%d\n", seven / zero);
    } else {
        abort();
    }
    printf("not reached\n");
    return 0;
}
