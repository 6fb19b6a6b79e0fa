/* Compiled delivery (delivery.c), shared with the compiled hooks (hooks.c). vmkit.machine.delivery's
 * Engine and Outcome mirror struct engine and struct delivery. */
#ifndef VMKIT_DELIVERY_H
#define VMKIT_DELIVERY_H
#include <stdint.h>

typedef int (*reg_batch_fn)(void *uc, int *ids, void **values, int count);
typedef int (*mem_read_fn)(void *uc, uint64_t address, void *bytes, uint64_t size);
typedef int (*mem_write_fn)(void *uc, uint64_t address, const void *bytes, uint64_t size);
typedef int (*context_fn)(void *uc, void *context);

enum { OK = 0, FAULT = 1, REFERENCE = 2, NONE = 3 };
enum { SOFTWARE = 0, EXCEPTION = 1, EXTERNAL = 2 };
enum { GP = 13, NP = 11, TS = 10, SS_ = 12, PF = 14 };

/* the registers delivery reads, in this order (vmkit.machine.delivery.Compiled fills the ids) */
enum { R_EIP, R_CS, R_EFLAGS, R_ESP, R_SS, R_CR0, R_CR3, R_CR4, R_IDTR, R_GDTR, R_LDTR, R_TR, STATE_REGS };
enum { F_SS, F_CS, F_ESP, F_EFLAGS, F_EIP, FAR_REGS };   /* in the order far_transfer loads them */

#define CR0_WP (1u << 16)
#define CR0_PG (1u << 31)
#define CR4_PSE (1u << 4)
#define PTE_P 1u
#define PTE_RW 2u
#define PTE_US 4u
#define PTE_A 0x20u
#define PTE_D 0x40u
#define PDE_PS 0x80u
#define PF_P 1u
#define PF_W 2u
#define PF_U 4u
#define TF (1u << 8)
#define IF (1u << 9)
#define NT (1u << 14)
#define RF (1u << 16)
#define VM (1u << 17)

struct mmr {                           /* unicorn/x86.h, uc_x86_mmr: GDTR, IDTR, LDTR, TR */
    uint16_t selector;
    uint64_t base;
    uint32_t limit;
    uint32_t flags;
};

struct engine {                        /* vmkit.machine.delivery.Engine mirrors this layout */
    void *uc;
    reg_batch_fn reg_read_batch;
    reg_batch_fn reg_write_batch;
    mem_read_fn mem_read;
    mem_write_fn mem_write;
    context_fn context_save;
    context_fn context_restore;
    void *context;                     /* a uc_context of this engine, to set CPL through (quirks.py) */
    int32_t old_exception;             /* offsets of hidden CPU fields in it (quirks.offsets()) */
    int32_t hflags;
    uint64_t ram_size;                 /* the CPU's own accesses must stay below it */
    int32_t state_ids[STATE_REGS];
    int32_t far_ids[FAR_REGS];
};

struct delivery {                      /* vmkit.machine.delivery.Outcome mirrors this layout */
    uint32_t status;                   /* OK, FAULT, REFERENCE */
    uint32_t fault_vector, fault_error, has_cr2, cr2;
    uint32_t from_ring, to_ring, gate_type, handler, stack_switch, esp, ss, if_cleared, return_eip;
    uint32_t frame_count;              /* the frame as it is in memory, from the new top of stack up */
    uint32_t frame[6];
};

#define REFUSE_PAGING 1                /* deliver_within: REFERENCE when CR0.PG is on */

/* vmkit_deliver, with limits: REFERENCE (nothing written) when the handler is at `refuse_eip`, or as
   `flags` say */
int deliver_within(struct engine *e, uint32_t vector, uint32_t source, int32_t has_error, uint32_t error_code,
                   uint64_t refuse_eip, uint32_t flags, struct delivery *out);
int vmkit_far_return_frame(struct engine *e, uint32_t skip, struct delivery *out);
int vmkit_peek(struct engine *e, uint32_t linear, void *bytes, uint32_t size);
#endif
