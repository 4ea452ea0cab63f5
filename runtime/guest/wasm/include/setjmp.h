/* Keepstack libc shim: <setjmp.h>. The keep never unwinds with longjmp (a trap ends the
 * application), but wasm-rt.h names the type in a struct. */
#ifndef KEEP_SETJMP_H
#define KEEP_SETJMP_H
typedef unsigned long jmp_buf[8];
#endif
