/* Configuration of the wasm2c runtime and generated code inside the keep. Force-included
 * (-include) first into every wasm2c-related translation unit, so all of them agree.
 *
 * No bounds checks on linear memory: wasm2c's guard-page mode (WASM_RT_USE_MMAP with
 * WASM_RT_MEMCHECK_GUARD_PAGES). The memory lives in an 8 GiB range of which only [0, size) is
 * accessible (keep_linear.c's mmap/mprotect on the platform's range: in the keep the page
 * tables' not-present range, ring 0 maps what memory.grow asks for); any i32 address plus any
 * i32 offset lands in the range, and the fault of an access past the size is turned into exactly
 * what keep_wasm_trap prints for WASM_RT_TRAP_OOB by the microkernel (trusted, in the launch
 * digest; runtime/guest/ukernel/linear.c), or on Linux by hostcheck.c's SIGSEGV handler. No
 * signals: a trap ends the application through keep_wasm_trap.
 *
 * Stack exhaustion costs nothing per call: the ring-3 stack has a non-present guard page below
 * it (runtime/guest/ukernel/ABI.md), every ring-3 object is compiled with -fstack-clash-protection (a
 * frame larger than a page is probed page by page, so no frame can step over the guard), and a
 * ring-3 page fault inside the guard is turned by the microkernel (trusted, in the launch
 * digest) into exactly what keep_wasm_trap prints for WASM_RT_TRAP_EXHAUSTION. The Linux
 * "hostcheck" build does the same with a SIGSEGV handler on an alternate stack (hostcheck.c).
 * So wasm2c's "unchecked" mode is conforming here: exhaustion is still always detected, as is
 * every access out of bounds. */
#ifndef KEEP_RT_CONFIG_H
#define KEEP_RT_CONFIG_H

#define WASM_RT_USE_MMAP 1
#define WASM_RT_MEMCHECK_GUARD_PAGES 1
#define WASM_RT_SKIP_SIGNAL_RECOVERY 1
#define WASM_RT_NONCONFORMING_UNCHECKED_STACK_EXHAUSTION 1
#define WASM_RT_ALLOW_SEGUE 0
#define WASM_RT_TRAP_HANDLER keep_wasm_trap

#endif
