/* The vmkit PC's interrupt and watch hooks, compiled: the common events handled inside Unicorn's hooks
 * without Python, and handed to Python to record afterwards (vmkit.machine.hooks).
 *
 * Machine._on_interrupt and Machine._on_watched are the reference. These hooks are registered ahead of
 * them and handle an event only where the outcome is the one the Python would reach, and cheaply
 * known to be so; then they set `handled_...`, and the Python hook, called next for the same event,
 * returns at once. Everything else is the Python's, unchanged:
 *
 * - `int n` (n >= 32: only int n raises those) at the end of its translated block (QEMU ends a block at
 *   int n), with paging off: delivered through the IDT by delivery.c, as Machine.deliver would, when it
 *   does not fault and the handler is not where the slice must stop. The count there is the block
 *   counter's (blockcount.c): the block's instructions are all done, the int included.
 * - iret and retf ending their block: the frame they will pop is read, for the ring-transition event.
 * - sti and popf: the Python looks at them only when an interrupt waits, and then the hooks are off.
 *   This alone is also done for a VMM (`deliveries` 0), which decides for itself what an int n or an
 *   iret means but watches sti and popf as the machine does.
 * - For trap-and-emulate (`traps` 1, vmkit.vmm.trap_emulate), the #GP that cli or sti raises in the
 *   guest kernel's ring 1: EIP is moved past the instruction and the trap waits here, and the VMM
 *   emulates it against its virtual CPU when it records it (TrapAndEmulate.compiled_trap). The VMM
 *   asks for this only where its own handling would change nothing else: its handlers for cli and
 *   sti are the shipped ones, no interrupt waits, paging is off (no shadow MMU at work), and the
 *   slice would go on after the trap (so no timer tick, budget or stop falls there).
 *
 * Python arms the hooks for a slice (Machine._arm) only where nothing else would have happened at those
 * points: the machine is the vmkit PC itself (no VMM overrides what it does there), its slice is
 * counted by the block counter, no interrupt waits at the PIC (only Python raises one: the timer
 * between slices), run_until waits for no event, and nothing has asked the slice to end. It disarms
 * them when a stop is asked for. At most `left` events are handled before Python looks at the clock
 * again, and at most EVENTS wait to be recorded.
 */
#include <stdint.h>
#include <string.h>

#include "blockcount.h"
#include "delivery.h"

#define EVENTS 64
enum { E_INT = 1, E_RETURN = 2, E_TRAP = 3 };
#define OP_IRET 0xCF
#define OP_RETF 0xCB
#define OP_RETF_IMM 0xCA
#define OP_STI 0xFB
#define OP_CLI 0xFA
#define OP_POPF 0x9D

struct pc_event {                      /* vmkit.machine.hooks.EVENT mirrors this layout */
    uint32_t kind;                     /* E_INT, E_RETURN or E_TRAP */
    uint32_t eip;                      /* the int's address, the iret's or retf's, or the trapping instruction's */
    uint64_t started;                  /* the slice's count there (Machine._counter) */
    uint32_t vector;                   /* E_INT: the vector */
    uint32_t op;                       /* E_RETURN: the opcode and its immediate (op | imm16 << 8); E_TRAP: the opcode */
    struct delivery d;                 /* what was delivered, or the frame the return will pop; E_TRAP: the
                                          #GP's error code in fault_error */
    uint32_t pad;
};

struct pc {                            /* vmkit.machine.hooks.State mirrors this layout */
    struct engine *engine;
    struct counter *counter;
    uint32_t armed;                    /* Python: the hooks may handle events in this slice */
    uint32_t deliveries;               /* Python: they may handle int n and returns; else only sti and popf */
    uint32_t handled_interrupt;        /* the hook has handled the event: the Python hook for it returns at once */
    uint32_t handled_watch;            /* the same for a watched instruction */
    uint64_t slice_n;                  /* the slice's length (Machine._slice_n) */
    uint64_t until;                    /* the address the slice stops at */
    int64_t skip_sync_pc;              /* quirks: the engine's skip_sync_pc_on_exit, or -1 */
    uint32_t left;                     /* events the hooks may still handle before Python looks at the clock */
    uint32_t count;                    /* events[0..count) wait for Python to record them */
    uint32_t traps;                    /* Python: the VMM's cli and sti traps may be handled in this slice */
    int32_t exception_is_int;          /* quirks.offsets(): where the engine's context says what the hook is */
    int32_t error_code;                /* told of (a software int or an exception), and its error code */
    struct pc_event events[EVENTS];
};

static int read_registers(struct engine *e, uint64_t *eip, uint64_t *cr0)
{
    int ids[2] = {e->state_ids[R_EIP], e->state_ids[R_CR0]};
    void *values[2] = {eip, cr0};
    *eip = *cr0 = 0;
    return e->reg_read_batch(e->uc, ids, values, 2);
}

/* A hook moved EIP and the slice goes on there: counting.BlockCounter.resume_after (the faulting block
   ended where the hook ran, the next one adds to the count), and quirks.resync_pc (later hooks read EIP
   up to date). */
static void resume(struct pc *p, void *uc)
{
    struct counter *c = p->counter;
    c->start = 0;
    c->size = 0;
    c->icount = 0;
    c->last_start = 0;
    c->last_size = 0;
    c->last_icount = 0;
    if (p->skip_sync_pc >= 0) {
        *((uint8_t *)uc + p->skip_sync_pc) = 0;
    }
}

static int ready(struct pc *p)
{
    struct counter *c = p->counter;
    return p->armed && p->deliveries && p->left > 0 && p->count < EVENTS && !c->refused && c->limit < NO_LIMIT;
}

void vmkit_pc_interrupt(void *uc, uint32_t vector, void *data)
{
    struct pc *p = data;
    struct counter *c = p->counter;
    struct pc_event *ev;
    uint64_t eip, cr0;
    uint8_t code[2];
    p->handled_interrupt = 0;
    if (vector < 32 || !ready(p) || read_registers(p->engine, &eip, &cr0) != 0 || (cr0 & CR0_PG)) {
        return;
    }
    /* EIP is after the int: at the end of the block, whose instructions the counter has all counted */
    if (eip != c->start + c->size || c->size == 0 || c->done >= p->slice_n || eip < 2 || eip > p->engine->ram_size) {
        return;
    }
    if (p->engine->mem_read(p->engine->uc, eip - 2, code, 2) != 0 || code[0] != 0xCD || code[1] != vector) {
        return;                        /* not plain `int n` (Machine.instruction_address says where) */
    }
    ev = &p->events[p->count];
    if (deliver_within(p->engine, vector, SOFTWARE, 0, 0, p->until, REFUSE_PAGING, &ev->d) != OK) {
        return;                        /* a fault, or something the reference does: the Python's */
    }
    ev->kind = E_INT;
    ev->eip = (uint32_t)eip - 2;
    ev->started = c->done;
    ev->vector = vector;
    ev->op = 0;
    resume(p, uc);                     /* the block ended at the int */
    p->count++;
    p->left--;
    p->handled_interrupt = 1;
}

void vmkit_pc_watched(void *uc, uint64_t address, uint32_t size, void *data)
{
    struct pc *p = data;
    struct counter *c = p->counter;
    struct pc_event *ev;
    uint8_t op[3];
    (void)uc;
    p->handled_watch = 0;
    if (!p->armed || vmkit_peek(p->engine, (uint32_t)address, op, 3) != OK) {
        return;
    }
    if (op[0] == OP_STI || op[0] == OP_POPF) {
        p->handled_watch = 1;          /* no interrupt waits: nothing to look at */
        return;
    }
    if ((op[0] != OP_IRET && op[0] != OP_RETF && op[0] != OP_RETF_IMM) || !ready(p)) {
        return;
    }
    if (address + size != c->start + c->size || c->size == 0) {
        return;                        /* not the end of its block: the count there needs the Python */
    }
    ev = &p->events[p->count];
    ev->op = op[0] == OP_RETF_IMM ? (uint32_t)op[0] | ((uint32_t)op[1] << 8) | ((uint32_t)op[2] << 16) : op[0];
    if (vmkit_far_return_frame(p->engine, op[0] == OP_RETF_IMM ? (uint32_t)op[1] | ((uint32_t)op[2] << 8) : 0,
                               &ev->d) == OK) {
        ev->kind = E_RETURN;
        ev->eip = (uint32_t)address;
        ev->started = c->done;
        ev->vector = 0;
        p->count++;
        p->left--;
    }
    p->handled_watch = 1;              /* an unreadable stack: the CPU faults on it, recorded then */
}

/* Trap-and-emulate's commonest trap: the guest kernel, in ring 1, runs cli or sti and the CPU raises #GP
   (SDM vol. 2A, CLI: IOPL < CPL). Handled here when it is the fault of a plain cli or sti (not an int 13),
   the last instruction of its block (where the block ends with Unicorn 2.1.4: tests/test_compiled_delivery.py
   counts the traps handled here), with paging
   off, and with room in the slice after it: one more instruction after an sti, which may be the one
   whose interrupt shadow the VMM holds (TrapAndEmulate.slice_may_go_on). The CPU forgets the fault
   (quirks.clear_fault_and_set_cpl), EIP moves past the instruction, and the trap waits for the VMM. */
void vmkit_vmm_trap(void *uc, uint32_t vector, void *data)
{
    struct pc *p = data;
    struct counter *c = p->counter;
    struct engine *e = p->engine;
    struct pc_event *ev;
    uint64_t eip = 0, cs = 0, cr0 = 0;
    int ids[3] = {e->state_ids[R_EIP], e->state_ids[R_CS], e->state_ids[R_CR0]};
    void *values[3] = {&eip, &cs, &cr0};
    void *eip_value[1] = {&eip};
    uint8_t op;
    int32_t *is_int, *error_code;
    p->handled_interrupt = 0;
    if (vector != GP || !p->armed || !p->traps || p->left == 0 || p->count >= EVENTS || c->refused
            || c->limit >= NO_LIMIT || e->reg_read_batch(e->uc, ids, values, 3) != 0) {
        return;
    }
    if ((cs & 3) != 1 || (cr0 & CR0_PG) || eip >= e->ram_size) {
        return;
    }
    /* the faulting instruction ends its block, which the counter has counted whole: `done` includes it */
    if (c->size == 0 || eip + 1 != c->start + c->size || c->done >= p->slice_n || eip + 1 == p->until) {
        return;
    }
    if (e->mem_read(e->uc, eip, &op, 1) != 0 || (op != OP_CLI && op != OP_STI)) {
        return;
    }
    if (op == OP_STI && p->slice_n - c->done < 2) {
        return;
    }
    if (e->context_save(e->uc, e->context) != 0) {
        return;
    }
    is_int = (int32_t *)((char *)e->context + p->exception_is_int);
    error_code = (int32_t *)((char *)e->context + p->error_code);
    if (*is_int) {
        return;                        /* int 13 with a cli or sti after it: the Python's */
    }
    *(int32_t *)((char *)e->context + e->old_exception) = -1;
    e->context_restore(e->uc, e->context);
    eip += 1;
    e->reg_write_batch(e->uc, &ids[0], eip_value, 1);
    ev = &p->events[p->count];
    memset(ev, 0, sizeof *ev);
    ev->kind = E_TRAP;
    ev->eip = (uint32_t)eip - 1;
    ev->started = c->done;
    ev->vector = vector;
    ev->op = op;
    ev->d.fault_error = (uint32_t)*error_code;
    resume(p, uc);                     /* the block ended at the cli or sti */
    p->count++;
    p->left--;
    p->handled_interrupt = 1;
}
