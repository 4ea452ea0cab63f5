/* Keepstack libc shim: <stdio.h>. Only what the wasm2c runtime names; no formatted output. */
#ifndef KEEP_STDIO_H
#define KEEP_STDIO_H
#include <stddef.h>
int puts(const char *s);
void perror(const char *s); /* keep_linear.c: prints nothing, abort() does */
#endif
