/* The `.note.keepstack` note: the keep's layout and launch settings, declared in the ELF so that
 * toolchain/measure/keep.py needs nothing else to lay the keep out. */
#include "keep_abi.h"

extern const char keep_boot_stack_top[];
extern const char keep_fault_stack_top[];
extern const char keep_ap_park[];
extern const char keep_vector_stubs[];

struct keep_note {
    uint32_t namesz;
    uint32_t descsz;
    uint32_t type;
    char name[12];
    struct keep_layout desc;
};

__attribute__((section(".note.keepstack"), used, aligned(8))) static const struct keep_note
    keep_layout_note = {
        .namesz = sizeof(KEEP_NOTE_NAME),
        .descsz = sizeof(struct keep_layout),
        .type = KEEP_NOTE_TYPE_LAYOUT,
        .name = KEEP_NOTE_NAME,
        .desc =
            {
                .abi_version = KEEP_ABI_VERSION,
                .size = sizeof(struct keep_layout),
                .guest_policy = KEEP_GUEST_POLICY,
                .sev_features = KEEP_SEV_FEATURES,
                .ram_size = KEEP_RAM_SIZE,
                .gdt = KEEP_GDT_GPA,
                .tss = KEEP_TSS_GPA,
                .idt = KEEP_IDT_GPA,
                .secrets_page = KEEP_SECRETS_GPA,
                .cpuid_page = KEEP_CPUID_GPA,
                .user_info = KEEP_USER_INFO_GPA,
                .page_tables = KEEP_PAGE_TABLES_GPA,
                .page_tables_size = KEEP_PAGE_TABLES_SIZE,
                .hc_page = KEEP_HC_PAGE_GPA,
                .hc_buffer = KEEP_HC_BUFFER_GPA,
                .hc_buffer_size = KEEP_HC_BUFFER_SIZE,
                .doorbell = KEEP_DOORBELL_GPA,
                .user_base = KEEP_USER_BASE,
                .user_stack_size = KEEP_USER_STACK_SIZE,
                .boot_stack_top = (uint64_t)keep_boot_stack_top,
                .fault_stack_top = (uint64_t)keep_fault_stack_top,
                .ap_entry = (uint64_t)keep_ap_park,
                .vector_stubs = (uint64_t)keep_vector_stubs,
            },
};
