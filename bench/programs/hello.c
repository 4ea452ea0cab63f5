/* The smallest real WASI program: one line through wasi-libc's stdio, then exit. */
#include <stdio.h>

int main(void) {
    puts("hello from C in a keep");
    return 0;
}
