/* Keepstack libc shim: <assert.h>. A failed assertion aborts (trap-like exit, no message). */
#ifndef KEEP_ASSERT_H
#define KEEP_ASSERT_H
_Noreturn void abort(void);
#ifdef NDEBUG
#define assert(x) ((void)0)
#else
#define assert(x) ((x) ? (void)0 : abort())
#endif
#endif
