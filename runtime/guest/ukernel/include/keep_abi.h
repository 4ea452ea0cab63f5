/* Keep hypercall ABI and launch layout, version 5 (see runtime/guest/ukernel/ABI.md).
 *
 * GENERATED from toolchain/measure/abi.py by `python -m toolchain.measure.abi --header`:
 * edit that module, then regenerate; keep build refuses a tree where the two differ.
 *
 * Shared by the microkernel (ring 0) and the in-guest runtime (ring 3). The layout
 * values are also declared in the microkernel ELF's `.note.keepstack` note (struct
 * keep_layout below), which toolchain/measure/keep.py reads to build the LaunchPlan;
 * the VMM takes them from the plan. Usable from C and from assembly (the structs are
 * hidden from the assembler). */
#ifndef KEEP_ABI_H
#define KEEP_ABI_H

/* ---- version ----------------------------------------------------------------------------- */
#define KEEP_ABI_VERSION 5

/* ---- guest physical layout (identity mapped: VA = GPA) ----------------------------------- */
#define KEEP_PAGE_SIZE 0x1000
#define KEEP_GDT_GPA 0x1000 /* GDT (0x000) and TSS (0x080); ring 0 only */
#define KEEP_TSS_GPA 0x1080
#define KEEP_IDT_GPA 0x2000 /* 256 gates; ring 0 only */
#define KEEP_SECRETS_GPA 0x3000 /* SNP secrets page; ring 0 only */
#define KEEP_CPUID_GPA 0x4000 /* SNP CPUID page; ring 0 only */
#define KEEP_USER_INFO_GPA 0x5000 /* struct keep_user_info; ring 3 read-only */
#define KEEP_GHCB_GPA 0x6000 /* GHCB (version 4): shared, never launched; ring 0 only */
#define KEEP_PAGE_TABLES_GPA 0x10000 /* PML4 first, then PDPT, PDs, PTs; not mapped */
#define KEEP_PAGE_TABLES_SIZE 0xF0000
#define KEEP_UKERNEL_BASE 0x100000 /* microkernel ELF is linked here */
#define KEEP_UKERNEL_LIMIT 0x200000
#define KEEP_HC_PAGE_GPA 0x200000 /* hypercall page, shared with the VMM */
#define KEEP_HC_BUFFER_GPA 0x201000 /* hypercall data buffer, shared with the VMM */
#define KEEP_HC_BUFFER_SIZE 0x10000
#define KEEP_DOORBELL_GPA 0x400000 /* MMIO: a 32-bit write of 1 exits to the VMM */
#define KEEP_USER_BASE 0x1000000 /* ring-3 runtime image is linked at or above this */
#define KEEP_RAM_SIZE 0x10000000 /* 256 MiB of guest RAM unless the keep is built with --memory */
#define KEEP_USER_STACK_SIZE 0x800000 /* ring-3 stack at the top of RAM, guard below */

/* ---- ending the application -------------------------------------------------------------- */
/* Exit status of an application that trapped (as wasmtime's CLI: 128 + SIGABRT). */
#define KEEP_TRAP_EXIT_STATUS 134
/* Exit status when the runtime cannot go on (bad launch arguments, out of memory). */
#define KEEP_FATAL_EXIT_STATUS 125
/* What the microkernel prints on stderr when ring 3 faults in the stack guard
 * ([keep_user_info.heap_end, stack_bottom)): the runtime's trap line for stack exhaustion. */
#define KEEP_STACK_EXHAUSTED_MESSAGE "wasm trap: call stack exhausted\n"

/* ---- segment selectors (GDT built by the toolchain) -------------------------------------- */
#define KEEP_SEL_KCODE 0x8
#define KEEP_SEL_KDATA 0x10
#define KEEP_SEL_UCODE 0x1B /* 0x18 | RPL 3 */
#define KEEP_SEL_UDATA 0x23 /* 0x20 | RPL 3 */
#define KEEP_SEL_TSS 0x28

/* ---- launch settings --------------------------------------------------------------------- */
/* SNP guest policy: bit 16 must be one, bit 17 SMT allowed; debug, migration off. */
#define KEEP_GUEST_POLICY 0x30000
/* VMSA SEV_FEATURES: bit 0 SNPActive only. */
#define KEEP_SEV_FEATURES 0x1

/* ---- hypercall page ---------------------------------------------------------------------- */
#define KEEP_HC_MAGIC 0x3143484B /* "KHC1" little-endian */
#define KEEP_HC_OFF_MAGIC 0x0
#define KEEP_HC_OFF_VERSION 0x4
#define KEEP_HC_OFF_CALL 0x8
#define KEEP_HC_OFF_STATUS 0xC
#define KEEP_HC_OFF_ARGS 0x10
#define KEEP_HC_OFF_RET 0x40
#define KEEP_DOORBELL_RING 1
/* Version 4, simulated platform only: what replaces VMGEXIT (the VMM serves the GHCB). */
#define KEEP_DOORBELL_VMGEXIT 2
/* Version 4, simulated only: a 64-bit write here is WRMSR+VMGEXIT, a read RDMSR. */
#define KEEP_DOORBELL_MSR_OFFSET 0x8
/* Version 4: the GHCB MSR protocol (GHCBInfo in bits 11:0). */
#define KEEP_GHCB_MSR 0xC0010130u
#define KEEP_GHCB_MSR_REG_GPA_REQ 0x12
#define KEEP_GHCB_MSR_REG_GPA_RESP 0x13
#define KEEP_GHCB_MSR_PSC_REQ 0x14
#define KEEP_GHCB_MSR_PSC_RESP 0x15
#define KEEP_PSC_SHARED 2
#define KEEP_GHCB_MSR_TERM_REQ 0x100
/* call numbers (Hypercall); FAULT's arguments: vector, error code, CR2, RIP, CS, RSP */
#define KEEP_HC_CONSOLE_WRITE 1
#define KEEP_HC_STDIN_READ 2
#define KEEP_HC_EXIT 3
#define KEEP_HC_FAULT 4
#define KEEP_HC_LAUNCH_ARGS 5
#define KEEP_HC_REPORT_DATA 6
#define KEEP_HC_ATTEST 7
#define KEEP_HC_CLOCK 8
#define KEEP_HC_TREES 9 /* ABI version 2 */
#define KEEP_HC_RESULT 10 /* ABI version 3 */
#define KEEP_CLOCK_REALTIME 0
#define KEEP_CLOCK_MONOTONIC 1
#define KEEP_REPORT_DATA_SIZE 64
#define KEEP_REPORT_SIZE 0x4A0
/* Where the microkernel puts things in the data buffer during boot. */
#define KEEP_BOOT_REPORT_DATA_OFFSET 0x0
#define KEEP_BOOT_REPORT_OFFSET 0x100
/* Version 4: the SNP guest request's request and response pages (page-aligned GPAs). */
#define KEEP_BOOT_GUEST_REQ_OFFSET 0x1000
#define KEEP_BOOT_GUEST_RSP_OFFSET 0x2000
/* Version 4: heap and stack made private and validated (pvalidate.c, ABI.md). */
#define KEEP_DOORBELL_PVALIDATE_OFFSET 0x10
#define KEEP_SVM_VMGEXIT_PSC 0x80000010u
#define KEEP_GHCB_SHARED_BUFFER_OFFSET 0x800
#define KEEP_PSC_MAX_ENTRY 253
#define KEEP_PSC_PRIVATE 1
#define KEEP_PVALIDATE_FAIL_INPUT 1
#define KEEP_PVALIDATE_FAIL_SIZEMISMATCH 6
/* Version 4, snp: the C-bit checked against the CPUID page (cbit.c, ABI.md). */
#define KEEP_CPUID_LEAF_SEV 0x8000001Fu
#define KEEP_CPUID_COUNT_MAX 64

/* ---- version 4: why the microkernel stopped before ring 3 -------------------------------- */
/* EXIT arguments when attestation fails: this status, reason, expected, found. */
#define KEEP_EXIT_ATTEST_FAILED 125
#define KEEP_STOP_GHCB 1
#define KEEP_STOP_VMPCK 2
#define KEEP_STOP_SEQNO_EXHAUSTED 3
#define KEEP_STOP_ALGO 4
#define KEEP_STOP_HDR_VERSION 5
#define KEEP_STOP_HDR_SZ 6
#define KEEP_STOP_MSG_TYPE 7
#define KEEP_STOP_MSG_VERSION 8
#define KEEP_STOP_MSG_VMPCK 9
#define KEEP_STOP_MSG_SEQNO 10
#define KEEP_STOP_MSG_SZ 11
#define KEEP_STOP_AUTHTAG 12
#define KEEP_STOP_STATUS 13
#define KEEP_STOP_REPORT_SIZE 14
#define KEEP_STOP_DISABLED 15
#define KEEP_STOP_REPORT_DATA 16
#define KEEP_STOP_VMPL 17
#define KEEP_STOP_GHCB_REG_INFO 18
#define KEEP_STOP_GHCB_REG_GFN 19
#define KEEP_STOP_PSC_INFO 20
#define KEEP_STOP_PSC_ERROR 21
#define KEEP_STOP_MMIO_EXITINFO1 22
#define KEEP_STOP_MMIO_EXITINFO2 23
#define KEEP_STOP_VC_EXIT_CODE 24
#define KEEP_STOP_VC_RING 25
#define KEEP_STOP_VC_INSTRUCTION 26
#define KEEP_STOP_VC_GPA 27
#define KEEP_STOP_PSC_NAE 28
#define KEEP_STOP_PSC_END_ENTRY 29
#define KEEP_STOP_PSC_CUR_ENTRY 30
#define KEEP_STOP_PVALIDATE 31
#define KEEP_STOP_PVALIDATE_UNCHANGED 32
#define KEEP_STOP_CPUID_LEAF 33
#define KEEP_STOP_C_BIT 34

/* ---- .note.keepstack and the user-info page ---------------------------------------------- */
#define KEEP_NOTE_NAME "Keepstack" /* namesz 10 with the NUL, padded to 12 */
#define KEEP_NOTE_TYPE_LAYOUT 1
/* IDT entry stubs: 256 of them, this many bytes apart, from keep_layout.vector_stubs */
#define KEEP_VECTOR_STUB_SIZE 16
#define KEEP_USER_INFO_MAGIC 0x3149554B /* "KUI1" */

/* ---- the TREES call's transfer blob (runtime/guest/wasm/keep_trees.c) -------------------- */
#define KEEP_TRANSFER_MAGIC "KTREES2" /* 8 bytes with its NUL */
#define KEEP_TREE_MAGIC "KEEPTREE1" /* 10 bytes with its NUL */
#define KEEP_TREES_MAX_COUNT 64 /* the most trees one run may preopen */
#define KEEP_TREES_MAX_BYTES 0x2000000u /* summed over the tree encodings */
#define KEEP_FS_FILE_MAX 0x40000000ull /* the largest file in the keep */
#define KEEP_TREE_FLAG_RW 0x1u /* a tree's flags: hand it back */
#define KEEP_RW_BINDING_TAG "KEEPRW1" /* 8 bytes with its NUL */

/* ---- the RESULT call's blob (runtime/guest/wasm/keep_fs.c, fs_hand_back) ----------------- */
#define KEEP_RESULT_MAGIC "KRESULT" /* 8 bytes with its NUL */
#define KEEP_RESULT_MAX 0x2100000ull /* 33 MiB */

/* ---- version 4: wasm linear memory behind the page tables (runtime/guest/ukernel/linear.c)  */
/* The reserved range (not present until grown) and the most that can be mapped (no */
/* suffixes: entry.S includes these too). */
#define KEEP_LINEAR_BASE 0x8000000000
#define KEEP_LINEAR_RESERVE 0x200000000
#define KEEP_LINEAR_MAX 0x100000000
#define KEEP_LINEAR_CHUNK 0x200000 /* chunk k: the heap's k-th 2 MiB from the top */
/* A ring-3 read here asks ring 0 to map up to rdx bytes; resumes at rsi, rax = 0 or -1. */
#define KEEP_LINEAR_GATE 0x7FFFFFF000
#define KEEP_LINEAR_PDPT_GPA 0xFA000
#define KEEP_LINEAR_PD_GPA 0xFB000 /* LINEAR_PD_COUNT pages, ring 0 RW */
#define KEEP_LINEAR_PD_COUNT 4
#define KEEP_LINEAR_PT_GPA 0xFF000 /* ring 0 RW: the last, incomplete chunk */
#define KEEP_RUNTIME_HEAP_RESERVE 81920 /* kept below the linear memory */
/* What the microkernel prints on stderr for a ring-3 fault in the reserved range. */
#define KEEP_OOB_MESSAGE "wasm trap: out of bounds memory access\n"

#ifndef __ASSEMBLER__
#include <stdint.h>

/* The compiler checks each structure against the packing Python uses (abi.py CStruct). */
#define KEEP_ABI_OFFSET(s, f, at) \
    _Static_assert(__builtin_offsetof(struct s, f) == (at), "abi.py: " #s "." #f " at " #at)
#define KEEP_ABI_SIZE(s, n) \
    _Static_assert(sizeof(struct s) == (n), "abi.py: struct " #s " is " #n " bytes")

struct keep_hc_page {
    uint32_t magic; /* KEEP_HC_MAGIC */
    uint16_t version; /* KEEP_ABI_VERSION */
    uint16_t reserved;
    uint32_t call;
    int32_t status; /* written by the VMM: 0 ok, negative errno */
    uint64_t arg[6];
    uint64_t ret[2];
};
KEEP_ABI_OFFSET(keep_hc_page, magic, 0);
KEEP_ABI_OFFSET(keep_hc_page, version, 4);
KEEP_ABI_OFFSET(keep_hc_page, reserved, 6);
KEEP_ABI_OFFSET(keep_hc_page, call, 8);
KEEP_ABI_OFFSET(keep_hc_page, status, 12);
KEEP_ABI_OFFSET(keep_hc_page, arg, 16);
KEEP_ABI_OFFSET(keep_hc_page, ret, 64);
KEEP_ABI_SIZE(keep_hc_page, 80);

/* Read-only block ring 3 finds at KEEP_USER_INFO_GPA; its address is also in rdi at entry. */
struct keep_user_info {
    uint32_t magic; /* KEEP_USER_INFO_MAGIC */
    uint16_t abi_version;
    uint16_t c_bit; /* version 4, snp: the C-bit the page tables carry (0: none) */
    uint64_t hc_page;
    uint64_t hc_buffer;
    uint64_t hc_buffer_size;
    uint64_t doorbell;
    uint64_t entry; /* the runtime image's ELF entry point */
    uint64_t image_start; /* lowest page of the runtime image */
    uint64_t image_end; /* first byte after the image's last page */
    uint64_t heap_start; /* private RAM, contents undefined: zero what you use */
    uint64_t heap_end;
    uint64_t stack_top; /* initial rsp (16-byte aligned); the stack grows down to stack_bottom */
    uint64_t stack_bottom; /* the page below is unmapped (guard) */
    uint64_t ram_size;
};
KEEP_ABI_OFFSET(keep_user_info, magic, 0);
KEEP_ABI_OFFSET(keep_user_info, abi_version, 4);
KEEP_ABI_OFFSET(keep_user_info, c_bit, 6);
KEEP_ABI_OFFSET(keep_user_info, hc_page, 8);
KEEP_ABI_OFFSET(keep_user_info, hc_buffer, 16);
KEEP_ABI_OFFSET(keep_user_info, hc_buffer_size, 24);
KEEP_ABI_OFFSET(keep_user_info, doorbell, 32);
KEEP_ABI_OFFSET(keep_user_info, entry, 40);
KEEP_ABI_OFFSET(keep_user_info, image_start, 48);
KEEP_ABI_OFFSET(keep_user_info, image_end, 56);
KEEP_ABI_OFFSET(keep_user_info, heap_start, 64);
KEEP_ABI_OFFSET(keep_user_info, heap_end, 72);
KEEP_ABI_OFFSET(keep_user_info, stack_top, 80);
KEEP_ABI_OFFSET(keep_user_info, stack_bottom, 88);
KEEP_ABI_OFFSET(keep_user_info, ram_size, 96);
KEEP_ABI_SIZE(keep_user_info, 104);

/* Descriptor of the `.note.keepstack` note (type KEEP_NOTE_TYPE_LAYOUT): everything the
 * toolchain needs to lay the keep out, declared once, in the microkernel ELF. */
struct keep_layout {
    uint32_t abi_version;
    uint32_t size; /* sizeof(struct keep_layout) */
    uint64_t guest_policy;
    uint64_t sev_features;
    uint64_t ram_size;
    uint64_t gdt;
    uint64_t tss;
    uint64_t idt;
    uint64_t secrets_page;
    uint64_t cpuid_page;
    uint64_t user_info;
    uint64_t page_tables;
    uint64_t page_tables_size;
    uint64_t hc_page;
    uint64_t hc_buffer;
    uint64_t hc_buffer_size;
    uint64_t doorbell;
    uint64_t user_base;
    uint64_t user_stack_size;
    uint64_t boot_stack_top; /* initial rsp of the boot vCPU */
    uint64_t fault_stack_top; /* TSS.RSP0 and IST1: where faults land */
    uint64_t ap_entry; /* where application processors park */
    uint64_t vector_stubs; /* IDT entry i = vector_stubs + i * KEEP_VECTOR_STUB_SIZE */
};
KEEP_ABI_OFFSET(keep_layout, abi_version, 0);
KEEP_ABI_OFFSET(keep_layout, size, 4);
KEEP_ABI_OFFSET(keep_layout, guest_policy, 8);
KEEP_ABI_OFFSET(keep_layout, sev_features, 16);
KEEP_ABI_OFFSET(keep_layout, ram_size, 24);
KEEP_ABI_OFFSET(keep_layout, gdt, 32);
KEEP_ABI_OFFSET(keep_layout, tss, 40);
KEEP_ABI_OFFSET(keep_layout, idt, 48);
KEEP_ABI_OFFSET(keep_layout, secrets_page, 56);
KEEP_ABI_OFFSET(keep_layout, cpuid_page, 64);
KEEP_ABI_OFFSET(keep_layout, user_info, 72);
KEEP_ABI_OFFSET(keep_layout, page_tables, 80);
KEEP_ABI_OFFSET(keep_layout, page_tables_size, 88);
KEEP_ABI_OFFSET(keep_layout, hc_page, 96);
KEEP_ABI_OFFSET(keep_layout, hc_buffer, 104);
KEEP_ABI_OFFSET(keep_layout, hc_buffer_size, 112);
KEEP_ABI_OFFSET(keep_layout, doorbell, 120);
KEEP_ABI_OFFSET(keep_layout, user_base, 128);
KEEP_ABI_OFFSET(keep_layout, user_stack_size, 136);
KEEP_ABI_OFFSET(keep_layout, boot_stack_top, 144);
KEEP_ABI_OFFSET(keep_layout, fault_stack_top, 152);
KEEP_ABI_OFFSET(keep_layout, ap_entry, 160);
KEEP_ABI_OFFSET(keep_layout, vector_stubs, 168);
KEEP_ABI_SIZE(keep_layout, 176);
#endif

#endif
