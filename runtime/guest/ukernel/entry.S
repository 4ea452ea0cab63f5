/* Entry points, the 256 vector stubs, the fault path and the switch to ring 3.
 * Everything here runs in ring 0, where PVM emulates each instruction: keep it short. */
#include "keep_abi.h"

    .section .text.entry, "ax", @progbits

/* Boot vCPU: rsp = keep_boot_stack_top (set by the measured initial state). */
    .globl _start
_start:
    call keep_main
    jmp keep_halt

/* Application processors park here with interrupts off. */
    .globl keep_ap_park
keep_ap_park:
    .globl keep_halt
keep_halt:
    cli
    hlt
    jmp keep_halt

/* IDT entry i = keep_vector_stubs + i * KEEP_VECTOR_STUB_SIZE. Each stub pushes a zero error
 * code where the CPU pushes none, then its vector. */
    .balign KEEP_VECTOR_STUB_SIZE
    .globl keep_vector_stubs
keep_vector_stubs:
    .set vec, 0
    .rept 256
    .balign KEEP_VECTOR_STUB_SIZE
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    .if vec == 29
    jmp keep_vc_entry /* #VC: ring 3's doorbell store, forwarded through the GHCB (vc.c) */
    .else
    jmp keep_fault
    .endif
    .set vec, vec + 1
    .endr
    .balign KEEP_VECTOR_STUB_SIZE
    .globl keep_vector_stubs_end
keep_vector_stubs_end:

/* On IST1: [rsp] vector, error code, RIP, CS, RFLAGS, RSP, SS. A ring-3 #PF at the linear
 * memory's gate is ring 3 asking for more (linear.c: rdx = the size, resume at rsi, the answer
 * in rax; ring 3 gave up every other caller-saved register, the callee-saved ones the C code
 * keeps). A ring-3 #PF in the stack guard or the reserved linear range ends the application as
 * a trap (fault.c, linear.c: they do not return then); anything else is reported through FAULT,
 * then the keep halts for good. Nothing but the gate returns to ring 3. */
keep_fault:
    cld /* ring 3's RFLAGS.DF survives the exception; the C code below assumes it clear */
    cmpq $14, 0(%rsp)
    jne 1f
    testb $3, 24(%rsp)
    jz 1f
    movq %cr2, %rdi
    movabsq $KEEP_LINEAR_GATE, %rax
    cmpq %rax, %rdi
    je 2f
    subq $8, %rsp /* 16-byte aligned at the call */
    call keep_fault_stack_guard
    movq %cr2, %rdi
    call keep_fault_linear
    addq $8, %rsp
1:
    movl $KEEP_HC_PAGE_GPA, %eax
    movl $KEEP_HC_MAGIC, KEEP_HC_OFF_MAGIC(%rax)
    movw $KEEP_ABI_VERSION, KEEP_HC_OFF_VERSION(%rax)
    movl $KEEP_HC_FAULT, KEEP_HC_OFF_CALL(%rax)
    popq %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 0(%rax)
    popq %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 8(%rax)
    movq %cr2, %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 16(%rax)
    movq 0(%rsp), %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 24(%rax)
    movq 8(%rsp), %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 32(%rax)
    movq 24(%rsp), %rcx
    movq %rcx, KEEP_HC_OFF_ARGS + 40(%rax)
    subq $8, %rsp /* 16-byte aligned at the call */
    movl $KEEP_DOORBELL_RING, %edi
    movl $4, %esi
    call keep_doorbell /* a GHCB MMIO-write request, as every ring-0 doorbell write */
    jmp keep_halt
2:
    movq %rsi, 16(%rsp) /* resume after the gate's read */
    movq %rdx, %rdi
    subq $8, %rsp
    call keep_linear_grow
    addq $24, %rsp /* the alignment word, the vector and the error code */
    iretq

/* #VC (vector 29) on IST1: [rsp] vector, error code (the exit code), RIP, CS, RFLAGS, RSP, SS.
 * Saves the GPRs as struct keep_vc_frame (gpr[i] is register i; rsp's slot is 0: the decoder
 * never uses it), lets keep_vc_handle forward the store and advance RIP (or stop the keep),
 * and returns to the instruction after the store. No SSE register is touched on the way. */
keep_vc_entry:
    pushq %r15
    pushq %r14
    pushq %r13
    pushq %r12
    pushq %r11
    pushq %r10
    pushq %r9
    pushq %r8
    pushq %rdi
    pushq %rsi
    pushq %rbp
    pushq $0
    pushq %rbx
    pushq %rdx
    pushq %rcx
    pushq %rax
    movq %rsp, %rdi
    subq $8, %rsp /* 16-byte aligned at the call */
    call keep_vc_handle
    addq $8, %rsp
    popq %rax
    popq %rcx
    popq %rdx
    popq %rbx
    addq $8, %rsp
    popq %rbp
    popq %rsi
    popq %rdi
    popq %r8
    popq %r9
    popq %r10
    popq %r11
    popq %r12
    popq %r13
    popq %r14
    popq %r15
    addq $16, %rsp /* vector, error code */
    iretq

/* keep_enter_user(entry, stack_top, info): iretq to ring 3 with every other register zero. */
    .globl keep_enter_user
keep_enter_user:
    pushq $KEEP_SEL_UDATA
    pushq %rsi
    pushq $0x2
    pushq $KEEP_SEL_UCODE
    pushq %rdi
    movq %rdx, %rdi
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %esi, %esi
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    iretq

/* Ring-0 stacks: the boot stack, and the fault stack (TSS.RSP0 and IST1). */
    .section .bss.stacks, "aw", @nobits
    .balign KEEP_PAGE_SIZE
    .space KEEP_PAGE_SIZE
    .globl keep_boot_stack_top
keep_boot_stack_top:
    .space KEEP_PAGE_SIZE
    .globl keep_fault_stack_top
keep_fault_stack_top:
