/* Interrupt and exception delivery, compiled: the same steps as vmkit/machine/delivery.py, which is
 * the reference this is tested against (tests/test_compiled_delivery.py), in the same order, with
 * the same faults (Intel SDM vol. 3, 6.12 and 6.13).
 *
 * Why it exists: delivery reads the IDT, the GDT and the TSS and writes the frame, a dozen accesses to
 * the engine. From Python each is a call through ctypes, and the Python around them costs more than the
 * CPU's own work; an `int 0x80` round trip spent most of its time there. Here the whole delivery is one
 * call, and the engine's functions (uc.h: uc_reg_read_batch, uc_mem_read, ...) are called directly.
 *
 * What it leaves to the reference: whatever ends in a GuestError there (an access outside the guest's
 * RAM; the reference knows the VMM's memory regions and says what went wrong) answers REFERENCE before
 * anything is written, and the caller runs delivery.py instead. Python calls it only for a CPU without
 * a VMM's view (no shadow paging, no stand-in tables, no store watch), which is the vmkit PC's, or the
 * VMM's own CPU state where the guest's tables are the real ones.
 *
 * The CPU's accesses are to linear addresses: with CR0.PG on, a walk of 32-bit paging's two levels
 * (SDM vol. 3, 4.3), setting accessed and dirty bits as QEMU's walk does (Cpu.translate in cpu.py says
 * how, and is the reference). Gates, descriptors and the TSS are supervisor reads; the frame is written
 * at the new CPL (SDM 4.6).
 *
 * Built with the block counter (blockcount.c) into one library by vmkit.machine.native.
 */
#include <string.h>

#include "delivery.h"

struct cpu_state {                     /* what one delivery read of the CPU, and where it goes wrong */
    struct engine *e;
    uint64_t regs[STATE_REGS];
    struct mmr idtr, gdtr, ldtr, tr;
    struct delivery *out;
};

static int fault(struct cpu_state *s, uint32_t vector, uint32_t error)
{
    s->out->status = FAULT;
    s->out->fault_vector = vector;
    s->out->fault_error = error;
    return FAULT;
}

static int page_fault(struct cpu_state *s, uint32_t linear, uint32_t code, int peek)
{
    if (peek) {
        return NONE;
    }
    s->out->has_cr2 = 1;
    s->out->cr2 = linear;
    return fault(s, PF, code);
}

static int read_physical_u32(struct cpu_state *s, uint64_t address, uint32_t *value)
{
    if (address + 4 > s->e->ram_size) {
        return REFERENCE;              /* a paging-structure entry outside RAM: a GuestError there */
    }
    return s->e->mem_read(s->e->uc, address, value, 4) == 0 ? OK : REFERENCE;
}

static void set_bits(struct cpu_state *s, uint64_t address, uint32_t entry, uint32_t bits)
{
    if ((entry & bits) != bits) {
        entry |= bits;
        s->e->mem_write(s->e->uc, address, &entry, 4);
    }
}

/* Cpu.translate: the physical address of `linear`, or a #PF (NONE when peeking). */
static int translate(struct cpu_state *s, uint32_t linear, int write, int user, int peek, uint64_t *physical)
{
    uint32_t cr0 = (uint32_t)s->regs[R_CR0], cr4 = (uint32_t)s->regs[R_CR4];
    uint32_t code = (write ? PF_W : 0) | (user ? PF_U : 0);
    uint64_t pde_address, pte_address, last_address;
    uint32_t pde, pte, last, rights;
    int r;
    if (!(cr0 & CR0_PG)) {
        *physical = linear;
        return OK;
    }
    pde_address = (s->regs[R_CR3] & ~0xFFFull) + ((linear >> 22) << 2);
    if ((r = read_physical_u32(s, pde_address, &pde)) != OK) {
        return r;
    }
    if (!(pde & PTE_P)) {
        return page_fault(s, linear, code, peek);
    }
    if ((pde & PDE_PS) && (cr4 & CR4_PSE)) {
        last_address = pde_address;
        last = pde;
        rights = pde;
        *physical = (pde & 0xFFC00000u) | (linear & 0x3FFFFFu);
    } else {
        if (!peek) {
            set_bits(s, pde_address, pde, PTE_A);
        }
        pte_address = (pde & ~0xFFFu) + (((linear >> 12) & 0x3FFu) << 2);
        if ((r = read_physical_u32(s, pte_address, &pte)) != OK) {
            return r;
        }
        if (!(pte & PTE_P)) {
            return page_fault(s, linear, code, peek);
        }
        last_address = pte_address;
        last = pte;
        rights = pde & pte;
        *physical = (pte & ~0xFFFu) | (linear & 0xFFFu);
    }
    if (user && (!(rights & PTE_US) || (write && !(rights & PTE_RW)))) {
        return page_fault(s, linear, code | PF_P, peek);
    }
    if (write && !user && (cr0 & CR0_WP) && !(rights & PTE_RW)) {
        return page_fault(s, linear, code | PF_P, peek);
    }
    if (!peek) {
        set_bits(s, last_address, last, PTE_A | (write ? PTE_D : 0));
    }
    return OK;
}

/* Cpu.read / Cpu.write / Cpu.peek of at most a page: every page translated before a byte moves. */
static int access(struct cpu_state *s, uint32_t linear, void *bytes, uint32_t size, int write, int user, int peek)
{
    uint64_t physical[2];
    uint32_t length[2], pieces = 0, address = linear, left = size, done = 0, i;
    int r;
    while (left > 0) {
        uint32_t n = 0x1000 - (address & 0xFFF);
        if (n > left) {
            n = left;
        }
        if ((r = translate(s, address, write, user, peek, &physical[pieces])) != OK) {
            return r;
        }
        if (physical[pieces] + n > s->e->ram_size) {
            return peek ? NONE : REFERENCE;    /* outside RAM: a GuestError there (or the VMM's memory) */
        }
        length[pieces++] = n;
        address += n;
        left -= n;
    }
    for (i = 0; i < pieces; i++) {
        int failed = write ? s->e->mem_write(s->e->uc, physical[i], (char *)bytes + done, length[i])
                           : s->e->mem_read(s->e->uc, physical[i], (char *)bytes + done, length[i]);
        if (failed) {
            return REFERENCE;
        }
        done += length[i];
    }
    return OK;
}

static int read_u64(struct cpu_state *s, uint64_t linear, uint64_t *value)
{
    return access(s, (uint32_t)linear, value, 8, 0, 0, 0);
}

struct descriptor {
    uint32_t base;
    uint8_t type, s, dpl, present;
};

static void decode_descriptor(uint64_t raw, struct descriptor *d)
{
    uint32_t access_byte = (uint32_t)(raw >> 40) & 0xFF;
    d->base = (uint32_t)(((raw >> 16) & 0xFFFFFF) | ((raw >> 32) & 0xFF000000u));
    d->type = access_byte & 0xF;
    d->s = (access_byte >> 4) & 1;
    d->dpl = (access_byte >> 5) & 3;
    d->present = access_byte >> 7;
}

#define IS_CODE(d) ((d).s && ((d).type & 8))
#define CONFORMING(d) (IS_CODE(d) && ((d).type & 4))
#define WRITABLE(d) ((d).s && !((d).type & 8) && ((d).type & 2))

/* Cpu.descriptor: the descriptor `selector` names, or `vector`(selector | ext) when it names nothing. */
static int descriptor(struct cpu_state *s, uint32_t selector, uint32_t vector, uint32_t ext, struct descriptor *d)
{
    uint32_t index = selector & ~7u;
    struct mmr *table = &s->gdtr;
    uint64_t raw;
    int r;
    if (selector & 4) {
        table = &s->ldtr;
        if ((table->selector & ~3u) == 0) {
            return fault(s, vector, (selector & ~3u) | ext);
        }
    }
    if (index + 7 > table->limit) {
        return fault(s, vector, (selector & ~3u) | ext);
    }
    if ((r = read_u64(s, table->base + index, &raw)) != OK) {
        return r;
    }
    decode_descriptor(raw, d);
    return OK;
}

/* Read the registers delivery looks at into `s`, in one call into the engine. */
static int read_state(struct engine *e, struct cpu_state *s, struct delivery *out)
{
    void *pointers[STATE_REGS];
    int i;
    memset(out, 0, sizeof *out);
    memset(s, 0, sizeof *s);
    s->e = e;
    s->out = out;
    for (i = 0; i < STATE_REGS; i++) {
        pointers[i] = &s->regs[i];
    }
    pointers[R_IDTR] = &s->idtr;
    pointers[R_GDTR] = &s->gdtr;
    pointers[R_LDTR] = &s->ldtr;
    pointers[R_TR] = &s->tr;
    return e->reg_read_batch(e->uc, e->state_ids, pointers, STATE_REGS);
}

/* delivery.py, deliver(): deliver `vector` now. */
int vmkit_deliver(struct engine *e, uint32_t vector, uint32_t source, int32_t has_error, uint32_t error_code,
                  struct delivery *out)
{
    return deliver_within(e, vector, source, has_error, error_code, ~0ull, 0, out);
}

int deliver_within(struct engine *e, uint32_t vector, uint32_t source, int32_t has_error, uint32_t error_code,
                   uint64_t refuse_eip, uint32_t flags, struct delivery *out)
{
    struct cpu_state s;
    uint32_t ext = source == SOFTWARE ? 0 : 1, idt_error = vector * 8 + 2 + ext;
    uint32_t old_eip, old_cs, old_eflags, old_esp, old_ss, cpl, new_cpl, selector, ss, esp, stack_base;
    uint32_t gate_offset, gate_type, gate_dpl, gate_present, eflags, pushed[6], count = 0, i, switch_;
    uint64_t raw, values[FAR_REGS];
    void *far_pointers[FAR_REGS];
    struct descriptor code, stack;
    int r;

    if (read_state(e, &s, out) != 0) {
        return out->status = REFERENCE;
    }
    old_eip = (uint32_t)s.regs[R_EIP];
    old_cs = (uint32_t)s.regs[R_CS] & 0xFFFF;
    old_eflags = (uint32_t)s.regs[R_EFLAGS];
    old_esp = (uint32_t)s.regs[R_ESP];
    old_ss = (uint32_t)s.regs[R_SS] & 0xFFFF;
    if ((flags & REFUSE_PAGING) && (s.regs[R_CR0] & CR0_PG)) {
        return out->status = REFERENCE;
    }

    if (vector * 8 + 7 > s.idtr.limit) {
        return fault(&s, GP, idt_error);
    }
    if ((r = read_u64(&s, s.idtr.base + vector * 8, &raw)) != OK) {
        return out->status = r;
    }
    gate_offset = (uint32_t)((raw & 0xFFFF) | ((raw >> 32) & 0xFFFF0000u));
    selector = (uint32_t)(raw >> 16) & 0xFFFF;
    gate_type = (uint32_t)(raw >> 40) & 0xF;
    gate_dpl = (uint32_t)(raw >> 45) & 3;
    gate_present = (uint32_t)(raw >> 47) & 1;
    if (gate_offset == refuse_eip) {
        return out->status = REFERENCE;
    }
    if (gate_type != 0xE && gate_type != 0xF) {
        return fault(&s, GP, idt_error);       /* task gates and 16-bit gates are not modelled */
    }
    cpl = old_cs & 3;
    if (source == SOFTWARE && gate_dpl < cpl) {
        return fault(&s, GP, idt_error);       /* int n may only use gates open to its ring */
    }
    if (!gate_present) {
        return fault(&s, NP, idt_error);
    }
    if ((selector & ~3u) == 0) {
        return fault(&s, GP, ext);
    }
    if ((r = descriptor(&s, selector, GP, ext, &code)) != OK) {
        return out->status = r;
    }
    if (!IS_CODE(code) || code.dpl > cpl) {
        return fault(&s, GP, (selector & ~3u) | ext);
    }
    if (!code.present) {
        return fault(&s, NP, (selector & ~3u) | ext);
    }

    switch_ = !CONFORMING(code) && code.dpl < cpl;
    if (switch_) {
        uint32_t tss_esp = 4 + 8 * code.dpl, tss_ss = tss_esp + 4;   /* SDM figure 7-2: ESPn, then SSn */
        new_cpl = code.dpl;
        if ((s.tr.selector & ~3u) == 0 || s.tr.limit < tss_ss + 1) {
            return fault(&s, TS, (s.tr.selector & ~3u) | ext);       /* no usable TSS */
        }
        if ((r = read_u64(&s, s.tr.base + tss_esp, &raw)) != OK) {
            return out->status = r;
        }
        ss = (uint32_t)(raw >> 32) & 0xFFFF;
        esp = (uint32_t)raw;
        /* delivery.py, _check_stack_segment */
        if ((ss & ~3u) == 0 || (ss & 3) != new_cpl) {
            return fault(&s, TS, (ss & ~3u) | ext);
        }
        if ((r = descriptor(&s, ss, TS, ext, &stack)) != OK) {
            return out->status = r;
        }
        if (!WRITABLE(stack) || stack.dpl != new_cpl) {
            return fault(&s, TS, (ss & ~3u) | ext);
        }
        if (!stack.present) {
            return fault(&s, SS_, (ss & ~3u) | ext);
        }
        stack_base = stack.base;
        pushed[count++] = old_ss;
        pushed[count++] = old_esp;
    } else {
        new_cpl = cpl;
        ss = old_ss;
        esp = old_esp;
        stack_base = 0;
        if (ss & ~3u) {                        /* Cpu.segment_base */
            if ((r = descriptor(&s, ss, GP, 0, &stack)) != OK) {
                return out->status = r;
            }
            stack_base = stack.base;
        }
    }
    pushed[count++] = old_eflags;
    pushed[count++] = old_cs;
    pushed[count++] = old_eip;
    if (has_error) {
        pushed[count++] = error_code;
    }
    esp -= 4 * count;
    for (i = 0; i < count; i++) {              /* in memory, from the new top of stack up: [error code], EIP, ... */
        out->frame[i] = pushed[count - 1 - i];
    }
    out->frame_count = count;
    if ((r = access(&s, stack_base + esp, out->frame, 4 * count, 1, new_cpl == 3, 0)) != OK) {
        if (r == REFERENCE) {
            out->status = REFERENCE;
        }
        return r;
    }

    eflags = old_eflags & ~(TF | NT | RF | VM);
    if (gate_type == 0xE) {
        eflags &= ~IF;
    }
    /* Cpu.far_transfer: forget the handled fault and set CPL (quirks.clear_fault_and_set_cpl), then load
       SS, CS, ESP, EFLAGS and EIP in one call, SS first (Unicorn checks SS against the CPL) */
    if (e->context_save(e->uc, e->context) != 0) {
        return out->status = REFERENCE;
    }
    *(int32_t *)((char *)e->context + e->old_exception) = -1;
    *(int32_t *)((char *)e->context + e->hflags) = (*(int32_t *)((char *)e->context + e->hflags) & ~3) | (int32_t)new_cpl;
    e->context_restore(e->uc, e->context);
    values[F_SS] = ss;
    values[F_CS] = (selector & ~3u) | new_cpl;
    values[F_ESP] = esp;
    values[F_EFLAGS] = eflags;
    values[F_EIP] = gate_offset;
    for (i = 0; i < FAR_REGS; i++) {
        far_pointers[i] = &values[i];
    }
    e->reg_write_batch(e->uc, e->far_ids, far_pointers, FAR_REGS);

    out->from_ring = cpl;
    out->to_ring = new_cpl;
    out->gate_type = gate_type;
    out->handler = gate_offset;
    out->stack_switch = switch_;
    out->esp = esp;
    out->ss = ss;
    out->if_cleared = gate_type == 0xE;
    out->return_eip = old_eip;
    return out->status = OK;
}

/* What an iret or a far return at CPL `cpl` would pop (Machine._record_far_return): the words at SS:ESP,
   five when CS's RPL is outer (SS:ESP too), else three; `skip` bytes of parameters (retf imm16) lie
   between the two parts. Looked at without touching accessed bits; NONE when the stack cannot be read
   (the CPU will fault on it, and that is recorded instead). out->frame holds the words, out->esp and
   out->ss the stack, out->from_ring the CPL. */
int vmkit_far_return_frame(struct engine *e, uint32_t skip, struct delivery *out)
{
    struct cpu_state s;
    struct descriptor stack;
    uint32_t cpl, ss, esp, base = 0, words[5], left, at;
    uint8_t scratch[0x1000];
    int i;

    if (read_state(e, &s, out) != 0) {
        return out->status = NONE;
    }
    cpl = (uint32_t)s.regs[R_CS] & 3;
    esp = (uint32_t)s.regs[R_ESP];
    ss = (uint32_t)s.regs[R_SS] & 0xFFFF;
    if (ss & ~3u) {                            /* Cpu.segment_base: a read as the CPU reads (accessed bits) */
        if (descriptor(&s, ss, GP, 0, &stack) != OK) {
            memset(out, 0, sizeof *out);
            return out->status = NONE;
        }
        base = stack.base;
    }
    if (access(&s, base + esp, words, 12, 0, 0, 1) != OK) {
        return out->status = NONE;
    }
    out->frame_count = 3;
    if ((words[1] & 3) > cpl) {                /* to an outer ring: SS:ESP are popped too */
        for (left = 8 + skip, at = base + esp + 12; left > 0; ) {    /* they (and retf's parameters) must be readable */
            uint32_t n = left < sizeof scratch ? left : sizeof scratch;
            if (access(&s, at, scratch, n, 0, 0, 1) != OK) {
                return out->status = NONE;
            }
            if (at == base + esp + 12) {
                memcpy(&words[3], scratch, 8);
            }
            at += n;
            left -= n;
        }
        out->frame_count = 5;
    }
    for (i = 0; i < (int)out->frame_count; i++) {
        out->frame[i] = words[i];
    }
    out->from_ring = cpl;
    out->esp = esp;
    out->ss = ss;
    return out->status = OK;
}

/* Cpu.peek: `size` bytes (at most a page) at linear `linear` as the guest would find them, no accessed
   bit set; NONE where they are not mapped or not in RAM. */
int vmkit_peek(struct engine *e, uint32_t linear, void *bytes, uint32_t size)
{
    struct cpu_state s;
    struct delivery out;
    int ids[3] = {e->state_ids[R_CR0], e->state_ids[R_CR3], e->state_ids[R_CR4]};
    void *values[3];
    memset(&s, 0, sizeof s);
    s.e = e;
    s.out = &out;
    values[0] = &s.regs[R_CR0];
    values[1] = &s.regs[R_CR3];
    values[2] = &s.regs[R_CR4];
    if (e->reg_read_batch(e->uc, ids, values, 3) != 0) {
        return NONE;
    }
    return access(&s, linear, bytes, size, 0, 0, 1) == OK ? OK : NONE;
}
