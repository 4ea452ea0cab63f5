/* The libc shim of the ring-3 runtime: memory and string functions, an allocator that can free,
 * and the math the wasm2c output needs (floor/ceil/trunc/nearbyint without SSE4.1's ROUNDSD).
 * Only what the wasm2c runtime, the generated code and the WASI layer call. */
#include <stddef.h>
#include <stdint.h>

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "keep_platform.h"
#include "keep_runtime.h"

/* Stop clang from turning these loops back into calls to themselves. */
#define NO_BUILTIN __attribute__((no_builtin))

/* ---- memory and strings ------------------------------------------------------------------ */

NO_BUILTIN void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    void *ret = dst;
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
    return ret;
}

NO_BUILTIN void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    if (d == s || n == 0) {
        return dst;
    }
    if (d < s || d >= s + n) {
        return memcpy(dst, src, n);
    }
    /* Overlapping, destination above the source: copy backwards. */
    const unsigned char *s_end = s + n - 1;
    unsigned char *d_end = d + n - 1;
    __asm__ volatile("std\n\trep movsb\n\tcld" : "+D"(d_end), "+S"(s_end), "+c"(n) : : "memory");
    return dst;
}

NO_BUILTIN void *memset(void *dst, int c, size_t n) {
    void *ret = dst;
    __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(c) : "memory");
    return ret;
}

NO_BUILTIN int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a;
    const unsigned char *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i]) {
            return x[i] < y[i] ? -1 : 1;
        }
    }
    return 0;
}

NO_BUILTIN void *memchr(const void *s, int c, size_t n) {
    const unsigned char *p = s;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == (unsigned char)c) {
            return (void *)(p + i);
        }
    }
    return NULL;
}

NO_BUILTIN size_t strlen(const char *s) {
    size_t n = 0;
    while (s[n] != 0) {
        n++;
    }
    return n;
}

NO_BUILTIN size_t strnlen(const char *s, size_t max) {
    size_t n = 0;
    while (n < max && s[n] != 0) {
        n++;
    }
    return n;
}

NO_BUILTIN int strcmp(const char *a, const char *b) {
    while (*a != 0 && *a == *b) {
        a++;
        b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

NO_BUILTIN int strncmp(const char *a, const char *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i] || a[i] == 0) {
            return (unsigned char)a[i] - (unsigned char)b[i];
        }
    }
    return 0;
}

NO_BUILTIN char *strchr(const char *s, int c) {
    for (;; s++) {
        if (*s == (char)c) {
            return (char *)s;
        }
        if (*s == 0) {
            return NULL;
        }
    }
}

/* ---- allocator ----------------------------------------------------------------------------
 * Boundary tags over one region [heap_start, heap_end): every block starts with a 16-byte
 * header (size of the block below, size of this block | USED). Free blocks sit on a doubly
 * linked list and merge with free neighbours. The unused tail of the region is the "top": new
 * blocks are carved from it, a freed last block returns to it, and the last block can grow into
 * it in place (so the wasm linear memory, usually the last big allocation, grows without a
 * copy). The heap's initial contents are undefined (private RAM outside the launch): calloc and
 * realloc zero what they hand out as zeroed. */

#define ALIGN ((size_t)16)
#define USED ((size_t)1)
#define HEADER ((size_t)16)
#define MIN_BLOCK ((size_t)48)

struct block {
    size_t prev_size;        /* size of the block below (0 for the first block) */
    size_t size;             /* size including the header, | USED */
    struct block *next_free; /* only while free */
    struct block *prev_free;
};

static uintptr_t heap_base;
static uintptr_t heap_top; /* first byte of the top (never part of a block) */
static uintptr_t heap_limit;
static struct block *last_block; /* the block right below the top, or NULL */
static struct block *free_list;

#define BSIZE(b) ((b)->size & ~USED)
#define PAYLOAD(b) ((void *)((uintptr_t)(b) + HEADER))

void keep_heap_init(uintptr_t start, uintptr_t end) {
    heap_base = (start + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
    heap_top = heap_base;
    heap_limit = end & ~(uintptr_t)(ALIGN - 1);
    if (heap_limit < heap_base) {
        heap_limit = heap_base;
    }
    last_block = NULL;
    free_list = NULL;
}

bool keep_heap_cede_top(uintptr_t new_end) {
    if (new_end >= heap_limit) { /* ceded already */
        return true;
    }
    if (new_end < heap_top) { /* in use */
        return false;
    }
    heap_limit = new_end;
    return true;
}

static struct block *above(struct block *b) { return (struct block *)((uintptr_t)b + BSIZE(b)); }

static struct block *below(struct block *b) {
    return b->prev_size == 0 ? NULL : (struct block *)((uintptr_t)b - b->prev_size);
}

static void unlink_free(struct block *b) {
    if (b->prev_free != NULL) {
        b->prev_free->next_free = b->next_free;
    } else {
        free_list = b->next_free;
    }
    if (b->next_free != NULL) {
        b->next_free->prev_free = b->prev_free;
    }
}

/* Set b's size and flag, and tell the block above (if any) how big b is now. */
static void set_size(struct block *b, size_t size, size_t flag) {
    b->size = size | flag;
    if (b != last_block) {
        above(b)->prev_size = size;
    }
}

/* Give a free block (not yet on the list) back: merge with free neighbours or the top. */
static void release(struct block *b) {
    struct block *up = b == last_block ? NULL : above(b);
    if (up != NULL && !(up->size & USED)) {
        unlink_free(up);
        if (up == last_block) {
            last_block = b;
        }
        b->size = BSIZE(b) + BSIZE(up);
        if (b != last_block) {
            above(b)->prev_size = BSIZE(b);
        }
    }
    struct block *down = below(b);
    if (down != NULL && !(down->size & USED)) {
        unlink_free(down);
        if (b == last_block) {
            last_block = down;
        }
        down->size = BSIZE(down) + BSIZE(b);
        if (down != last_block) {
            above(down)->prev_size = BSIZE(down);
        }
        b = down;
    }
    if (b == last_block) { /* back into the top */
        heap_top = (uintptr_t)b;
        last_block = below(b);
        return;
    }
    b->size = BSIZE(b);
    b->prev_free = NULL;
    b->next_free = free_list;
    if (free_list != NULL) {
        free_list->prev_free = b;
    }
    free_list = b;
}

/* Keep `need` bytes of the used block b and release the rest if it makes a block. */
static void shrink(struct block *b, size_t need) {
    size_t have = BSIZE(b);
    if (have - need < MIN_BLOCK) {
        return;
    }
    bool was_last = b == last_block;
    b->size = need | USED;
    struct block *rest = above(b);
    rest->prev_size = need;
    rest->size = have - need; /* free */
    if (was_last) {
        last_block = rest;
    } else {
        above(rest)->prev_size = have - need;
    }
    release(rest);
}

static size_t block_size_for(size_t request) {
    if (request > (size_t)(heap_limit - heap_base)) {
        return 0;
    }
    size_t size = (request + HEADER + ALIGN - 1) & ~(ALIGN - 1);
    return size < MIN_BLOCK ? MIN_BLOCK : size;
}

void *malloc(size_t request) {
    size_t need = block_size_for(request);
    if (need == 0) {
        return NULL;
    }
    for (struct block *b = free_list; b != NULL; b = b->next_free) {
        if (BSIZE(b) >= need) {
            unlink_free(b);
            b->size |= USED;
            shrink(b, need);
            return PAYLOAD(b);
        }
    }
    if ((size_t)(heap_limit - heap_top) < need) {
        return NULL;
    }
    struct block *b = (struct block *)heap_top;
    b->prev_size = last_block == NULL ? 0 : BSIZE(last_block);
    b->size = need | USED;
    heap_top += need;
    last_block = b;
    return PAYLOAD(b);
}

void free(void *ptr) {
    if (ptr == NULL) {
        return;
    }
    struct block *b = (struct block *)((uintptr_t)ptr - HEADER);
    if ((uintptr_t)b < heap_base || (uintptr_t)b >= heap_top || !(b->size & USED)) {
        keep_fatal("free() of a pointer the allocator did not hand out");
    }
    b->size &= ~USED;
    release(b);
}

void *calloc(size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        return NULL;
    }
    void *p = malloc(total);
    if (p != NULL) {
        memset(p, 0, total);
    }
    return p;
}

void *realloc(void *ptr, size_t request) {
    if (ptr == NULL) {
        return malloc(request);
    }
    if (request == 0) {
        free(ptr);
        return NULL;
    }
    struct block *b = (struct block *)((uintptr_t)ptr - HEADER);
    size_t need = block_size_for(request);
    if (need == 0) {
        return NULL;
    }
    size_t have = BSIZE(b);
    if (need <= have) {
        shrink(b, need);
        return ptr;
    }
    if (b == last_block && (size_t)(heap_limit - (uintptr_t)b) >= need) { /* grow into the top */
        b->size = need | USED;
        heap_top = (uintptr_t)b + need;
        return ptr;
    }
    if (b != last_block) {
        struct block *up = above(b);
        if (!(up->size & USED) && have + BSIZE(up) >= need) { /* absorb the free block above */
            unlink_free(up);
            if (up == last_block) {
                last_block = b;
            }
            set_size(b, have + BSIZE(up), USED);
            shrink(b, need);
            return ptr;
        }
    }
    void *fresh = malloc(request);
    if (fresh == NULL) {
        return NULL;
    }
    memcpy(fresh, ptr, have - HEADER);
    free(ptr);
    return fresh;
}

/* ---- math -------------------------------------------------------------------------------
 * IEEE-754 by bit manipulation: exact, NaN-preserving, and independent of SSE4.1. The wasm2c
 * output canonicalises NaN itself before calling these. */

static uint64_t f64_bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static double f64_from(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_from(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

double trunc(double x) {
    uint64_t u = f64_bits(x);
    int e = (int)((u >> 52) & 0x7ff) - 1023;
    if (e >= 52) {
        return x; /* integral already, or inf/NaN */
    }
    if (e < 0) {
        return f64_from(u & (1ull << 63)); /* |x| < 1: signed zero */
    }
    uint64_t fraction = (1ull << (52 - e)) - 1;
    return f64_from(u & ~fraction);
}

float truncf(float x) {
    uint32_t u = f32_bits(x);
    int e = (int)((u >> 23) & 0xff) - 127;
    if (e >= 23) {
        return x;
    }
    if (e < 0) {
        return f32_from(u & 0x80000000u);
    }
    uint32_t fraction = (1u << (23 - e)) - 1;
    return f32_from(u & ~fraction);
}

double floor(double x) {
    double t = trunc(x);
    if (t != x && signbit(x)) {
        return t - 1.0;
    }
    return t;
}

float floorf(float x) {
    float t = truncf(x);
    if (t != x && signbit(x)) {
        return t - 1.0f;
    }
    return t;
}

double ceil(double x) {
    double t = trunc(x);
    if (t != x && !signbit(x)) {
        return t + 1.0;
    }
    if (t == 0.0 && signbit(x)) {
        return f64_from(1ull << 63); /* ceil(-0.5) = -0 */
    }
    return t;
}

float ceilf(float x) {
    float t = truncf(x);
    if (t != x && !signbit(x)) {
        return t + 1.0f;
    }
    if (t == 0.0f && signbit(x)) {
        return f32_from(0x80000000u);
    }
    return t;
}

/* Round to nearest, ties to even (the default rounding mode): adding and subtracting 2^52 makes
 * the FPU do exactly that rounding. volatile keeps the compiler from folding the pair away. */
double nearbyint(double x) {
    uint64_t u = f64_bits(x);
    int e = (int)((u >> 52) & 0x7ff) - 1023;
    if (e >= 52) {
        return x;
    }
    volatile double big = 4503599627370496.0; /* 2^52 */
    double magnitude = fabs(x);
    volatile double rounded = magnitude + big;
    double result = rounded - big;
    return copysign(result, x);
}

float nearbyintf(float x) {
    uint32_t u = f32_bits(x);
    int e = (int)((u >> 23) & 0xff) - 127;
    if (e >= 23) {
        return x;
    }
    volatile float big = 8388608.0f; /* 2^23 */
    float magnitude = fabsf(x);
    volatile float rounded = magnitude + big;
    float result = rounded - big;
    return copysignf(result, x);
}

double rint(double x) { return nearbyint(x); }

float rintf(float x) { return nearbyintf(x); }

double sqrt(double x) {
    double r;
    __asm__("sqrtsd %1, %0" : "=x"(r) : "x"(x));
    return r;
}

float sqrtf(float x) {
    float r;
    __asm__("sqrtss %1, %0" : "=x"(r) : "x"(x));
    return r;
}

double fabs(double x) { return f64_from(f64_bits(x) & ~(1ull << 63)); }

float fabsf(float x) { return f32_from(f32_bits(x) & 0x7fffffffu); }

double copysign(double x, double y) {
    return f64_from((f64_bits(x) & ~(1ull << 63)) | (f64_bits(y) & (1ull << 63)));
}

float copysignf(float x, float y) {
    return f32_from((f32_bits(x) & 0x7fffffffu) | (f32_bits(y) & 0x80000000u));
}

double fmin(double x, double y) {
    if (isnan(x)) {
        return y;
    }
    if (isnan(y)) {
        return x;
    }
    if (x == y) {
        return signbit(x) ? x : y;
    }
    return x < y ? x : y;
}

float fminf(float x, float y) { return (float)fmin(x, y); }

double fmax(double x, double y) {
    if (isnan(x)) {
        return y;
    }
    if (isnan(y)) {
        return x;
    }
    if (x == y) {
        return signbit(x) ? y : x;
    }
    return x > y ? x : y;
}

float fmaxf(float x, float y) { return (float)fmax(x, y); }

/* ---- process ------------------------------------------------------------------------------ */

/* wasm2c's runtime aborts when it cannot allocate an instance's initial memory or tables. */
_Noreturn void abort(void) { keep_fatal("aborted (out of memory for the module?)"); }

_Noreturn void exit(int status) { keep_platform_exit(status); }

int puts(const char *s) {
    keep_platform_console_write(1, s, strlen(s));
    keep_platform_console_write(1, "\n", 1);
    return 0;
}
