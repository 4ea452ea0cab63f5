/* Three lines through stdio, no fflush, then abort(): a libc that sees stdout as a terminal
 * (the keep's WASI says character device) writes each line at its newline, so all three arrive
 * before the trap on every backend. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    printf("one\n");
    printf("two\n");
    printf("three\n");
    abort();
}
