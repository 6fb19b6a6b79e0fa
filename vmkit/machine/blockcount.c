/* Counting a slice's instructions one translated block at a time (vmkit.machine.counting).
 *
 * Unicorn's emu_start(count=n) counts with a code hook on every instruction (hook_count_cb in
 * Unicorn's uc.c): the translated code calls out of the JIT before each one. vmkit_count_block is
 * a block hook instead: Unicorn calls it once per translated block, before the block runs
 * (translator_loop in qemu/accel/tcg/translator.c emits the call ahead of gen_tb_start, whose
 * check_exit_request helper, qemu/include/exec/gen-icount.h, leaves the block before its first
 * instruction when the hook has called uc_emu_stop). It adds the block's instruction count, or
 * refuses the block (stops in front of it) when the block would take the slice past its limit;
 * Python then runs what is left exactly (vmkit.machine.counting). The first time a newly translated
 * block runs, the hook calls Python (`on_new`), which decodes it and may refuse it too (to fence
 * it, below).
 *
 * A block's instruction count is the one QEMU recorded when it translated it (tb->icount).
 * vmkit_count_new_block, an UC_HOOK_EDGE_GENERATED hook, is told of every block QEMU translates
 * (tb_find in qemu/accel/tcg/cpu-exec.c calls it with the new block's pc, icount and size; only the
 * engine's very first block is translated before that hook can run, and it is found as below). The
 * counts are kept in a table keyed by (address, size). Two live blocks can share a key and differ
 * in count (the same virtual address in two address spaces; code rewritten to the same length):
 * such a key is marked ambiguous for good, and its count is then asked of Unicorn for each run of
 * it (uc_ctl(UC_CTL_TB_REQUEST_CACHE): uc_gen_tb in qemu/accel/tcg/translate-all.c finds the block
 * that runs, by address and CPU state, in the CPU's jump cache), which is exact but slower.
 *
 * vmkit_count_fence is a code hook that does nothing: Unicorn follows every code hook's call with
 * an exit-request check (disas_insn in qemu/target/i386/translate.c, check_exit_request), and
 * in/out do not end a block, so a stop asked for in an in/out hook would otherwise take effect
 * only at the next block. Python puts a fence on the instruction after each in and out it finds.
 *
 * Built by vmkit.machine.counting with the system's C compiler (cc -O2 -shared -fPIC); it links
 * against nothing: Python hands it libunicorn's uc_ctl and uc_emu_stop, from the library its
 * Unicorn binding loaded.
 */
#include <stdlib.h>

#include "blockcount.h"

static struct block *slot(struct counter *c, uint64_t address, uint32_t size, int insert)
{
    uint64_t h = (address ^ ((uint64_t)size << 32)) * 0x9E3779B97F4A7C15ull;
    uint32_t i = (uint32_t)(h >> 49);  /* 15 bits */
    for (uint32_t probes = 0; probes < 64; probes++, i = (i + 1) & (SLOTS - 1)) {
        struct block *b = &c->table[i];
        if (b->size == 0) {
            if (!insert) {
                return 0;
            }
            b->address = address;
            b->size = size;
            b->icount = 0;
            b->flags = UNCHECKED;
            return b;
        }
        if (b->address == address && b->size == size) {
            return b;
        }
    }
    c->full = 1;
    return 0;
}

static uint32_t ask_unicorn(struct counter *c, void *uc, uint64_t address)
{
    uc_tb tb;
    if (c->ctl(uc, (int)c->request_cache, address, &tb) != 0 || tb.pc != address) {
        return 0;
    }
    return tb.icount;
}

/* Note a block QEMU has just translated (UC_HOOK_EDGE_GENERATED). */
void vmkit_count_new_block(void *uc, uc_tb *cur, uc_tb *prev, void *data)
{
    struct counter *c = data;
    struct block *b = slot(c, cur->pc, cur->size, 1);
    (void)uc;
    (void)prev;
    c->last_size = 0;                  /* forget the last block: its entry may change */
    if (b == 0) {
        return;
    }
    if (b->icount != 0 && b->icount != cur->icount) {
        b->flags |= AMBIGUOUS;
    }
    b->icount = cur->icount;
    b->flags |= UNCHECKED;
}

static void refuse(struct counter *c, void *uc, uint32_t why)
{
    c->refused = why;
    c->emu_stop(uc);
}

static void count_block_slowly(void *uc, uint64_t address, uint32_t size, struct counter *c)
    __attribute__((noinline));       /* keeps the loop case free of its register saves */

/* Count a block that is about to run (UC_HOOK_BLOCK). The first branch is a loop running the
   block it ran last: the case where the time goes. */
void vmkit_count_block(void *uc, uint64_t address, uint32_t size, void *data)
{
    struct counter *c = data;
    if (address == c->last_start && size == c->last_size && address == c->start && size == c->size
            && c->done + c->last_icount <= c->limit && !c->refused) {
        c->done += c->last_icount;
        c->interrupt = 0;
        return;
    }
    count_block_slowly(uc, address, size, c);
}

static void count_block_slowly(void *uc, uint64_t address, uint32_t size, struct counter *c)
{
    struct block *b;
    uint32_t icount;
    if (c->refused) {
        return;
    }
    /* The machine's look at code outside the guest's image (Machine._on_block_outside_image) is
       made from here, so that this is the engine's only block hook: Unicorn then calls it directly
       from the translated code instead of through its helper that walks the hook list
       (gen_uc_tracecode in qemu/include/tcg/tcg-op.h, when hooks_count is 1). */
    if (c->outside != 0 && address < c->memory_end && (address < c->inside_begin || address >= c->inside_end)
            && c->outside(address, size)) {
        return;                        /* stopped in front of it: it does not run */
    }
    c->start = address;
    c->size = size;
    c->interrupt = 0;
    if (address == c->last_start && size == c->last_size) {
        icount = c->last_icount;
        c->icount = icount;
        if (c->done + icount > c->limit) {
            refuse(c, uc, REFUSED_LIMIT);
            return;
        }
        c->done += icount;
        return;
    }
    b = slot(c, address, size, 1);
    if (b == 0) {
        c->icount = ask_unicorn(c, uc, address);
        refuse(c, uc, REFUSED_NEW);   /* table full: Python sees c->full */
        return;
    }
    if (b->icount == 0) {
        b->icount = (uint16_t)ask_unicorn(c, uc, address);    /* the engine's first block */
    }
    icount = (b->flags & AMBIGUOUS) ? ask_unicorn(c, uc, address) : b->icount;
    c->icount = icount;
    if (icount == 0) {
        refuse(c, uc, REFUSED_NEW);   /* Unicorn could not say: Python counts this slice the reference way */
        return;
    }
    if (b->flags & UNCHECKED) {
        b->flags &= ~UNCHECKED;
        if (c->on_new(address, size, icount)) {
            refuse(c, uc, REFUSED_NEW);
            return;
        }
    }
    if (!(b->flags & AMBIGUOUS)) {
        c->last_start = address;
        c->last_size = size;
        c->last_icount = icount;
    }
    if (c->done + icount > c->limit) {
        refuse(c, uc, REFUSED_LIMIT);
        return;
    }
    c->done += icount;
}

/* An interrupt hook registered ahead of the machine's: `into` does not end its block, and raises #OF
   with EIP after it (cpu_handle_exception in qemu/accel/tcg/cpu-exec.c moves EIP to
   exception_next_eip for a software interrupt), so EIP alone does not say which instruction trapped. */
void vmkit_count_interrupt(void *uc, uint32_t vector, void *data)
{
    struct counter *c = data;
    (void)uc;
    c->interrupt = vector + 1;
}

/* A memory hook on the devices' MMIO pages (past RAM) that does nothing: Unicorn brings EIP up to date
   before it calls a memory hook (cpu_restore_state in load_helper and store_helper,
   qemu/accel/tcg/cputlb.c), but not before the callbacks of a region mapped with uc_mmio_map, which
   read EIP to say where the access was; without a hook on every instruction, EIP would be where the
   block began. */
void vmkit_count_access(void *uc, int type, uint64_t address, int size, int64_t value, void *data)
{
    (void)uc;
    (void)type;
    (void)address;
    (void)size;
    (void)value;
    (void)data;
}

void vmkit_count_fence(void *uc, uint64_t address, uint32_t size, void *data)
{
    (void)uc;
    (void)address;
    (void)size;
    (void)data;
}

/* A zeroed counter, its table included (calloc: the table's pages cost nothing until used). */
struct counter *vmkit_count_new(void)
{
    return calloc(1, sizeof(struct counter));
}

void vmkit_count_free(struct counter *c)
{
    free(c);
}
