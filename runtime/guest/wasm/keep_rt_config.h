/* Configuration of the wasm2c runtime and generated code inside the keep. Force-included
 * (-include) first into every wasm2c-related translation unit, so all of them agree.
 *
 * No signals, no mmap: linear memory is heap memory with an explicit bounds check on every
 * access, and a trap ends the application through keep_wasm_trap.
 *
 * Stack exhaustion costs nothing per call: the ring-3 stack has a non-present guard page below
 * it (runtime/guest/ukernel/ABI.md), every ring-3 object is compiled with -fstack-clash-protection (a
 * frame larger than a page is probed page by page, so no frame can step over the guard), and a
 * ring-3 page fault inside the guard is turned by the microkernel (trusted, in the launch
 * digest) into exactly what keep_wasm_trap prints for WASM_RT_TRAP_EXHAUSTION. The Linux
 * "hostcheck" build does the same with a SIGSEGV handler on an alternate stack (hostcheck.c).
 * So wasm2c's "unchecked" mode is conforming here: exhaustion is still always detected. */
#ifndef KEEP_RT_CONFIG_H
#define KEEP_RT_CONFIG_H

#define WASM_RT_USE_MMAP 0
#define WASM_RT_MEMCHECK_BOUNDS_CHECK 1
#define WASM_RT_SKIP_SIGNAL_RECOVERY 1
#define WASM_RT_NONCONFORMING_UNCHECKED_STACK_EXHAUSTION 1
#define WASM_RT_ALLOW_SEGUE 0
#define WASM_RT_TRAP_HANDLER keep_wasm_trap

#endif
