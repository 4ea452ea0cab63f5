/* Wasm linear memory behind the page tables (ABI.md "Linear memory", version 4).
 *
 * The toolchain reserves [KEEP_LINEAR_BASE, + KEEP_LINEAR_RESERVE) — the 4 GiB index space and
 * wasm2c's 4 GiB guard — as not-present entries (PML4 entry 1 → a PDPT with empty PDs for the
 * first 4 GiB; nothing at all behind the guard). Ring 3 cannot edit page tables, so it asks:
 * a read of KEEP_LINEAR_GATE (entry.S) calls keep_linear_grow, which maps linear memory
 * [0, size). The backing is the heap's RAM, whole 2 MiB pages from the top down: linear chunk k
 * is [top - (k + 1) * 2 MiB, top - k * 2 MiB) with top = heap_end rounded down to 2 MiB, a
 * complete chunk one large page, the last incomplete one 4 KiB pages in the one PT. Ring 0
 * never maps anything but heap RAM there (the runtime's own data can be in the heap too: ring 3
 * keeps its allocator below the chunks, libc.c). Anything not mapped faults; keep_fault_linear
 * turns that into the trap "out of bounds memory access", so wasm2c's code needs no bounds
 * checks. Nothing here touches SSE (ring 0). */
#include "keep_abi.h"

#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_US 0x4ull
#define PTE_A 0x20ull
#define PTE_D 0x40ull
#define PTE_PS 0x80ull
#define PTE_NX (1ull << 63)
#define TABLE_FLAGS (PTE_P | PTE_RW | PTE_US | PTE_A)
#define LEAF_FLAGS (PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D | PTE_NX)
#define ENTRIES 512u

int64_t keep_linear_grow(uint64_t size);
void keep_fault_linear(uint64_t cr2);
__attribute__((noreturn)) void keep_end_as_trap(const char *message, uint64_t length);

/* Linear memory [0, linear_mapped) is mapped; it only ever grows (wasm memories never shrink). */
static uint64_t linear_mapped;
/* The PT has served a chunk since launch (it is launched empty: the first chunk needs no
 * clearing, which spares a small module 512 emulated ring-0 writes at start). */
static int pt_used;

/* The C-bit as the toolchain set it in the tables' pointers (0 on the simulated platform): the
 * PDPT's first entry is the first PD's GPA, the table flags and nothing else. */
static uint64_t c_mask(void) {
    uint64_t first = *(const volatile uint64_t *)KEEP_LINEAR_PDPT_GPA;
    return first & ~(uint64_t)(KEEP_LINEAR_PD_GPA | 0xFFF);
}

/* Heap RAM behind linear chunk k, below top (the heap's end rounded down to a 2 MiB page). */
static uint64_t chunk_ram(uint64_t top, uint64_t k) { return top - (k + 1) * KEEP_LINEAR_CHUNK; }

/* Map linear memory up to size bytes (a multiple of 4 KiB). Returns 0, or -1 and maps nothing
 * when size is unaligned, smaller than what is mapped, past the 4 GiB index space, or needs
 * more chunks than the heap holds. */
int64_t keep_linear_grow(uint64_t size) {
    const struct keep_user_info *info = (const struct keep_user_info *)KEEP_USER_INFO_GPA;
    uint64_t top = info->heap_end & ~(uint64_t)(KEEP_LINEAR_CHUNK - 1);
    uint64_t chunks = (size + KEEP_LINEAR_CHUNK - 1) / KEEP_LINEAR_CHUNK;
    /* In this order: past KEEP_LINEAR_MAX, chunks has wrapped (and the PDs end). */
    if ((size & (KEEP_PAGE_SIZE - 1)) != 0 || size < linear_mapped || size > KEEP_LINEAR_MAX ||
        top < info->heap_start + chunks * KEEP_LINEAR_CHUNK) { /* the lowest chunk's RAM */
        return -1;
    }
    volatile uint64_t *pd = (volatile uint64_t *)KEEP_LINEAR_PD_GPA; /* the PDs are contiguous */
    volatile uint64_t *pt = (volatile uint64_t *)KEEP_LINEAR_PT_GPA;
    uint64_t c = c_mask();
    int flush = 0;
    while (linear_mapped < size) {
        uint64_t k = linear_mapped / KEEP_LINEAR_CHUNK;
        uint64_t start = linear_mapped % KEEP_LINEAR_CHUNK; /* mapped so far in this chunk */
        uint64_t ram = chunk_ram(top, k);
        if (size >= (k + 1) * KEEP_LINEAR_CHUNK) { /* the whole chunk: one large page */
            pd[k] = ram | LEAF_FLAGS | PTE_PS | c;
            flush |= start != 0; /* it was the PT's: forget the cached walk through it */
            linear_mapped = (k + 1) * KEEP_LINEAR_CHUNK;
            continue;
        }
        if (start == 0) { /* a new last chunk: the PT is free (its chunk is complete) */
            for (uint32_t i = 0; pt_used && i < ENTRIES; i++) {
                pt[i] = 0;
            }
            pt_used = 1;
            pd[k] = KEEP_LINEAR_PT_GPA | TABLE_FLAGS | c;
        }
        for (uint64_t at = start; at < size - k * KEEP_LINEAR_CHUNK; at += KEEP_PAGE_SIZE) {
            pt[at / KEEP_PAGE_SIZE] = (ram + at) | LEAF_FLAGS | c;
        }
        linear_mapped = size;
    }
    if (flush) { /* before ring 3 runs again: no stale walk may reach the reused PT */
        uint64_t cr3;
        __asm__ volatile("mov %%cr3, %0\n\tmov %0, %%cr3" : "=r"(cr3) : : "memory");
    }
    return 0;
}

/* Called from keep_fault (entry.S) for a ring-3 #PF, with CR2. Returns unless CR2 lies in the
 * reserved range: then the application touched linear memory it has not grown to (or the
 * guard past the index space), which is the trap "out of bounds memory access". */
void keep_fault_linear(uint64_t cr2) {
    if (cr2 - KEEP_LINEAR_BASE >= KEEP_LINEAR_RESERVE) {
        return;
    }
    static const char message[] = KEEP_OOB_MESSAGE;
    keep_end_as_trap(message, sizeof(message) - 1);
}
