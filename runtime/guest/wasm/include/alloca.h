/* Keepstack libc shim: <alloca.h>. */
#ifndef KEEP_ALLOCA_H
#define KEEP_ALLOCA_H
#define alloca __builtin_alloca
#endif
