/* The block counter's state (blockcount.c), shared with the compiled hooks (hooks.c), which read the
 * count where they handle an event. vmkit.machine.counting.Counter mirrors struct counter's head. */
#ifndef VMKIT_BLOCKCOUNT_H
#define VMKIT_BLOCKCOUNT_H
#include <stdint.h>

typedef struct uc_tb {                 /* unicorn.h, struct uc_tb */
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
} uc_tb;

typedef int (*uc_ctl_fn)(void *uc, int control, ...);
typedef int (*uc_emu_stop_fn)(void *uc);
typedef int (*on_new_fn)(uint64_t address, uint32_t size, uint32_t icount);
typedef int (*outside_fn)(uint64_t address, uint32_t size);

#define SLOTS (1 << 15)                /* distinct blocks a machine can have before Python gives up on it */
#define UNCHECKED 1                    /* a block Python has not seen since QEMU translated it */
#define AMBIGUOUS 2                    /* two blocks with this address and size, counts differ */

#define REFUSED_LIMIT 1                /* why the block hook stopped emulation */
#define REFUSED_NEW 2

struct block {
    uint64_t address;
    uint32_t size;                     /* 0: the slot is free */
    uint16_t icount;
    uint16_t flags;
};

struct counter {                       /* vmkit.machine.counting.Counter mirrors this layout */
    uint64_t done;                     /* instructions of the blocks entered this slice, the current one's included */
    uint64_t limit;                    /* a block that would take `done` past this is refused */
    uint64_t start;                    /* the current block (or the refused one): its address, */
    uint32_t size;                     /* its length in bytes */
    uint32_t icount;                   /* and its instruction count */
    uint32_t refused;                  /* REFUSED_LIMIT or REFUSED_NEW: stopped in front of the block at `start` */
    uint32_t full;                     /* the table overflowed: Python counts the reference way from now on */
    uint32_t request_cache;            /* UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2) */
    uint32_t unused;
    uc_ctl_fn ctl;
    uc_emu_stop_fn emu_stop;
    on_new_fn on_new;                  /* Python: a new block; nonzero refuses it */
    outside_fn outside;                /* Python, for a block outside [inside_begin, inside_end) below */
    uint64_t inside_begin;             /* memory_end: nonzero stops the slice in front of the block */
    uint64_t inside_end;
    uint64_t memory_end;
    uint64_t last_start;               /* the last block counted from the table, when it was clean */
    uint32_t last_size;                /* (a loop runs the same block again and again) */
    uint32_t last_icount;
    uint32_t interrupt;                /* 1 + the vector Unicorn's interrupt hooks are being told of, or 0 */
    struct block table[SLOTS];
};

#define NO_LIMIT (1ull << 62)          /* counting.NO_LIMIT: the tail of a slice, or Unicorn counts */
#endif
