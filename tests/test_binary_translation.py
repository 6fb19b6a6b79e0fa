"""Binary translation: the guest kernel runs only from the translation cache, behaves exactly as on
its own machine (the holes of trap-and-emulate included), and its cli/sti/pushf/popf never trap."""
import importlib.util
import inspect
import re
import sys
from pathlib import Path

import pytest
from unicorn import UC_HOOK_CODE

import vmkit
import vmkit.guests
from vmkit import compare
from vmkit.vmm import BinaryTranslation, emit
from vmkit.vmm.binary_translation import CACHE_BASE
from vmkit.vmm.translator import RULES

sys.path.insert(0, str(Path(__file__).parent))
from test_machine import timer_guest                                     # noqa: E402
from test_qemu_differential import GUEST_ENDINGS, guest_source          # noqa: E402

BT = "binary-translation"


def same_as_native(source, technique=BT):
    native, bt = vmkit.run(source), vmkit.run(source, technique)
    assert bt.serial_bytes == native.serial_bytes
    assert (bt.exit_code, bt.halted, bt.shutdown) == (native.exit_code, native.halted, native.shutdown)
    return native, bt


# --- the emitted machine code is what NASM makes of the instruction it is named after -------------
EMITTED = [
    (emit.jmp(0x1000, 0x1234), "jmp dword 0x1234", 0x1000),
    (emit.jcc("ne", 0x1000, 0x900), "jne near 0x900", 0x1000),
    (emit.jmp_short(5), "jmp short $+7", 0),
    (emit.je_short(4), "je short $+6", 0),
    (emit.jecxz(9), "jecxz $+11", 0),
    (emit.jmp_gs(0x18), "jmp dword [gs:dword 0x18]", 0),
    (emit.int3(), "int3", 0),
    (emit.pushfd() + emit.popfd(), "pushfd\npopfd", 0),
    (emit.push_imm32(0x10), "push strict dword 0x10", 0),
    (emit.push_gs(0xC), "push dword [gs:dword 0xc]", 0),
    (emit.pop("eax"), "pop eax", 0),
    (emit.lea_esp(8), "lea esp, [dword esp + 8]", 0),
    (emit.mov_imm("ebx", 0x08), "mov ebx, dword 0x8", 0),
    (emit.mov_imm("eax", 0x08, 16), "mov ax, word 0x8", 0),
    (emit.gs_store(0, 0x200), "mov dword [gs:dword 0], dword 0x200", 0),
    (emit.gs_store_reg(0x10, "ecx"), "mov [gs:dword 0x10], ecx", 0),
    (emit.gs_store_reg(0x10, "eax"), "mov [gs:dword 0x10], eax", 0),
    (emit.gs_load_reg("ecx", 0x10), "mov ecx, [gs:dword 0x10]", 0),
    (emit.gs_load_reg("eax", 0x10), "mov eax, [gs:dword 0x10]", 0),
    (emit.gs_load_reg("eax", 0xC, 16), "mov ax, [gs:dword 0xc]", 0),
    (emit.mov_eax_from_esp(4), "mov eax, [byte esp + 4]", 0),
    (emit.mov_esp_from_eax(4), "mov [byte esp + 4], eax", 0),
    (emit.movzx_ecx_ah(), "movzx ecx, ah", 0),
    (emit.mov_ch_gs_table(0x100), "mov ch, [gs:nosplit ecx + 0x100]", 0),
    (emit.mov_cl_al(), "mov cl, al", 0),
    (emit.lea_ecx_ecx_eax(), "lea ecx, [ecx + eax]", 0),
    (emit.mov_ecx_from_esp(), "mov ecx, [esp]", 0),
    (emit.lea_ecx_ecx(-0x100010), "lea ecx, [dword ecx - 0x100010]", 0),
    (emit.nop(), "nop", 0),
    (emit.load_gs(0xC), "mov gs, [gs:dword 0xc]", 0),
    (emit.load_gs_from_code(0xFFC20020), "mov gs, [cs:dword 0xffc20020]", 0),
    (emit.and_eax(0xFFFFCDFF), "and eax, strict dword 0xffffcdff", 0),
    (emit.or_eax_gs(4), "or eax, [gs:dword 4]", 0),
    (emit.cmp_gs_byte(8, 0), "cmp byte [gs:dword 8], 0", 0),
    (emit.load_table_ecx(0x1004), "mov ecx, [gs:ecx * 8 + 0x1004]", 0),
]


@pytest.mark.parametrize("code,text,origin", EMITTED, ids=[t for _, t, _ in EMITTED])
def test_each_emitted_instruction_is_the_one_nasm_assembles(code, text, origin):
    assert code == vmkit.assemble(f"bits 32\norg {origin:#x}\n{text}\n").code


# --- correctness: the same answers as the guest's own machine ---------------------------------------
@pytest.mark.parametrize("name", sorted(GUEST_ENDINGS))
def test_every_platform_guest_gives_the_native_serial_output_and_ending(name):
    """The differential guests: rings, gates, faults, double and triple faults, I/O permission,
    segment loads, the timer, hlt: all through translated kernel code."""
    same_as_native(guest_source(name))


@pytest.mark.parametrize("name", ["rings", "same_ring", "trap_density", "call_ret", "self_modifying", "pv_ops"])
def test_the_course_guests_give_the_native_serial_output(name):
    same_as_native(vmkit.guests.image(name))


def test_the_hole_probes_give_native_answers_where_trap_and_emulate_gave_itself_away():
    image = vmkit.guests.image("holes")
    native, bt = same_as_native(image)
    te = vmkit.run(image, "trap-and-emulate")
    assert te.serial != native.serial                  # cs, pushf, sgdt, smsw, popf: visible under T&E
    assert "cs                  = 00000008" in bt.serial


def test_popf_keeps_the_critical_section_closed_so_no_update_is_lost():
    result = vmkit.run(vmkit.guests.image("popf_critical"), BT)
    counts = dict(re.findall(r"(\w[\w ]*?):\s+(\d+)", result.serial))
    assert counts["lost updates"] == "0" and counts["shared counter"] == counts["expected"]
    assert result.exit_code is not None


# --- the mechanism --------------------------------------------------------------------------------------
def test_guest_kernel_code_never_runs_outside_the_cache_while_user_code_runs_directly():
    m = BinaryTranslation(vmkit.guests.image("rings"))
    seen = {1: 0, 3: 0}

    def on_code(uc, address, size, _):
        seen[m.cpu.cpl] = seen.get(m.cpu.cpl, 0) + 1
    m.uc.hook_add(UC_HOOK_CODE, on_code, None, m.image.origin, m.image.end)
    result = m.run()
    assert result.exit_code == 3
    assert seen[1] == 0, "the CPU ran guest kernel bytes directly"
    assert seen[3] > 0, "user code should run untranslated"


def test_cli_sti_pushf_popf_are_rewritten_and_never_trap():
    source = """
        mov ecx, {n}
    again:
        cli
        pushf
        sti
        popf
        add eax, ecx
        loop again
        mov al, 0
        out 0xf4, al
    """
    few, many = (vmkit.run(source.format(n=n), BT) for n in (3, 300))
    trapped = {e.detail["instruction"].split()[0] for r in (few, many) for e in r.of_kind("trap")}
    assert not trapped & {"cli", "sti", "pushfd", "popfd"}
    assert many.stats["traps"] == few.stats["traps"] == 1          # only the out to isa-debug-exit
    assert many.stats["blocks_translated"] == few.stats["blocks_translated"]    # chained after one round


def test_translate_events_name_the_guest_block_and_its_place_in_the_cache():
    m = vmkit.machine("mov eax, 1\nadd eax, eax\njmp next\nnext: mov al, 0\nout 0xf4, al\n", BT)
    result = m.run()
    translations = result.of_kind("translate")
    assert len(translations) == result.stats["blocks_translated"] >= 2
    first = translations[0].detail
    assert first["guest"] == m.image.entry and first["cache"] >= CACHE_BASE
    unit = m.cache.units[m.image.entry]
    assert [p.how for p in unit.pieces] == ["copied", "copied", "exit"]
    assert bytes(unit.code[:len(m.image.code[:5])]) == m.image.code[:5]      # mov eax, 1: copied as is


def test_a_direct_jump_is_chained_to_its_target_once_translated():
    m = vmkit.machine("mov ecx, 50\nagain: dec ecx\njnz again\nmov al, 0\nout 0xf4, al\n", BT, unroll=1)
    m.run()
    loop = m.cache.units[m.image.symbols["again"]]
    assert any(way.chained_to is loop for way in loop.exits)          # the back edge jumps to itself
    assert m.stats["cache_misses"] <= 4


def test_returns_and_indirect_calls_find_their_targets_in_the_lookup_table():
    source = """
        mov ecx, 200
    again:
        call twice
        mov ebx, twice
        call ebx
        loop again
        mov al, 0
        out 0xf4, al
    twice:
        add eax, eax
        ret
    """
    native, bt = same_as_native(source)
    assert bt.stats["cache_misses"] < 20                 # 400 returns, almost all found in the cache


def test_a_ret_checks_its_predicted_return_in_cache_code_and_looks_up_any_other():
    source = """
        mov ecx, 300
    again:
        call one                           ; returns here only: its prediction always hits
        call two                           ; returns here and below: predicted here, looked up below
        add esi, eax
        call two
        add edi, eax
        loop again
        lea eax, [esi + edi]
        out 0xf4, al
    one:
        inc eax
        ret
    two:
        add eax, 3
        ret
    """
    image = vmkit.assemble(source)
    native = vmkit.run(image)
    m = BinaryTranslation(image, inline_calls=False)      # each call an exit, each ret checked
    bt = m.run()
    assert (bt.exit_code, bt.serial_bytes) == (native.exit_code, native.serial_bytes)
    units = {unit.guest: unit for unit in m.cache.units.values()}
    one, two = image.symbols["one"], image.symbols["two"]
    predicted = [way for way in units[one].exits if way.chained_to is not None]
    assert [way.target for way in predicted] == [image.symbols["again"] + 5]   # chained to the caller
    assert [way.target for way in units[two].exits] == [image.symbols["again"] + 10]
    assert bt.stats["cache_misses"] < 20 and bt.stats["traps"] == 1   # 1,200 rets; the one trap: out


def test_code_the_guest_rewrites_is_translated_again():
    source = """
        mov ecx, 2
    again:
        call patched
        add [total], eax
        mov byte [patched + 1], 7          ; mov eax, 5 -> mov eax, 7
        loop again
        mov eax, [total]
        out 0xf4, al                       ; 5 + 7 = 12
    patched:
        mov eax, 5
        ret
    total: dd 0
    """
    native, bt = same_as_native(source)
    assert native.exit_code == (12 << 1) | 1
    assert any(e.detail.get("invalidated") for e in bt.of_kind("translate"))


# --- calls translated in line, unrolled loops, chained jcc: the guest sees nothing of them --------
CALLS = """
    mov ecx, 50
again:
    call add_twice
    loop again
    out 0xf4, al
add_twice:
    add eax, ecx
    call add_once
    ret
add_once:
    add eax, 1
    ret
"""


def stopped_at(source, technique, budget, **options):
    """The result of a run stopped by its instruction budget (or ended before it)."""
    try:
        return vmkit.run(source, technique, max_instructions=budget, **options)
    except vmkit.GuestTimeout as timeout:
        return timeout.result


def test_a_call_goes_on_in_its_callee_and_a_ret_after_its_call_in_one_unit():
    m = vmkit.machine(CALLS, BT)
    result = m.run()
    native = vmkit.run(CALLS)
    assert (result.exit_code, result.stats["instructions"]) == (native.exit_code, native.stats["instructions"])
    unit = m.cache.units[m.image.symbols["again"]]
    texts = [p.text.split()[0] for p in unit.pieces if p.size]
    assert texts == ["call", "add", "call", "add", "ret", "ret", "loop"]
    assert unit.spans == [(m.image.symbols["again"], m.image.symbols["again"] + 7),
                          (m.image.symbols["add_twice"], m.image.symbols["add_once"] + 4)]
    assert "predict" not in {c.kind for c in m.cache.callouts.values()}      # no ret was checked
    assert result.stats["cache_misses"] <= 4


@pytest.mark.parametrize("callee", [
    "add esp, 4\n    push dword [esp - 4]",           # ESP moved by other means than push and pop
    "mov dword [esp], after",                          # a store: here, over the return address
    "pop ebx\n    push ebx",                         # a pop past the return address, then a push
])
def test_a_ret_after_stack_changes_it_cannot_follow_is_checked_as_before(callee):
    source = f"""
        mov ecx, 20
    again:
        call f
        add esi, 1
    after:
        loop again
        mov eax, esi
        out 0xf4, al
    f:
        {callee}
        ret
    """
    native, bt = same_as_native(source)
    assert bt.stats["instructions"] == native.stats["instructions"]
    m = vmkit.machine(source, BT)
    m.run()
    assert any(c.kind == "predict" for c in m.cache.callouts.values())


@pytest.mark.parametrize("source", [CALLS, """
    mov esi, 3
again:
    mov edi, 0x200000
    mov ecx, 37
    xor eax, eax
clear:
    mov [edi], eax
    add edi, 4
    dec ecx
    jnz clear
    mov ebx, 3
mark:
    mov byte [0x200000 + ebx], 1
    lea ebx, [ebx + 7]
    cmp ebx, 80
    jb mark
    dec esi
    jnz again
    out 0xf4, al
"""], ids=["calls", "loops"])
def test_units_that_count_ahead_are_exact_wherever_a_budget_stops_them(source):
    """Stopped after any number of instructions, binary translation (its calls in line and its loops
    unrolled, each counted once a pass, ahead or at its ways out) has counted what the bare machine
    has, and each run stopped and resumed one instruction at a time ends where the bare machine does."""
    end = vmkit.run(source).stats["instructions"]
    for budget in list(range(1, 60)) + list(range(60, end, 37)):
        native, bt = stopped_at(source, "native", budget), stopped_at(source, BT, budget)
        assert bt.stats["instructions"] == native.stats["instructions"], budget
    m = vmkit.machine(source, BT)
    while not m.finished:
        before = m.instructions
        m.run_until(instructions=1)
        assert m.instructions == before + 1 or m.finished
    native = vmkit.run(source)
    assert (m.result().regs, m.instructions) == (native.regs, native.stats["instructions"])


def test_a_loop_back_to_its_units_start_is_unrolled_and_counted_once_a_pass():
    source = "mov ecx, 100\nagain: add eax, ecx\ndec ecx\njnz again\nout 0xf4, al\n"
    m = vmkit.machine(source, BT)
    result = m.run()
    assert result.stats["instructions"] == vmkit.run(source).stats["instructions"] == 302
    loop = m.cache.units[m.image.symbols["again"]]
    assert [p.text for p in loop.pieces if p.size] == ["add eax, ecx", "dec ecx", "jne 0x100005"] * 8
    assert sum(1 for c in loop.counts) == 8      # one add ahead for every copy, one correction at each way out
    assert result.stats["cpu_instructions"] < 1.2 * result.stats["instructions"]


def test_a_taken_jcc_is_aimed_at_its_targets_translation_once_chained():
    source = "mov ecx, 50\nagain: sub ecx, 1\njnz again\nmov al, 0\nout 0xf4, al\n"    # counted ahead, by an add
    m = vmkit.machine(source, BT, unroll=1)
    m.run()
    loop = m.cache.units[m.image.symbols["again"]]
    taken = next(way for way in loop.exits if way.branch is not None)
    jcc = bytes(m.uc.mem_read(taken.branch, 6))
    assert jcc[:2] == b"\x0f\x85" and int.from_bytes(jcc[2:], "little", signed=True) == loop.cache - (taken.branch + 6)
    m.cache.kill(loop)                            # unchained again: the jcc leads to its exit
    jcc = bytes(m.uc.mem_read(taken.branch, 6))
    assert int.from_bytes(jcc[2:], "little", signed=True) == taken.site - (taken.branch + 6)


# test_machine's timer kernel (a tick every 7 of the PIT's clocks) around a loop with calls in line
# and an unrolled loop in it
TICKING = timer_guest(7, """
    sti
    mov esi, 1000
outer:
    call f                                     ; in line, with the call in it
    mov ecx, 23
inner:
    add eax, ecx                               ; a loop back to its unit's start: unrolled
    sub ecx, 1
    jnz inner
    dec esi
    jnz outer
    cli
    mov eax, [ticks]
    out 0xf4, al
f:
    add ebx, 3
    call g
    ret
g:
    xor edx, ebx
    ret""")


def test_timer_interrupts_come_at_the_same_instructions_in_line_and_unrolled():
    """The interrupt comes between the same two guest instructions as on the bare machine, inside
    calls translated in line and unrolled loops, whose counts run ahead of them."""
    native, bt = vmkit.run(TICKING), vmkit.run(TICKING, BT)
    ticks = [e.icount for e in native.of_kind("interrupt")]
    assert len(ticks) > 50
    assert [e.icount for e in bt.of_kind("interrupt")] == ticks
    assert (bt.exit_code, bt.stats["instructions"], bt.regs) == (native.exit_code, native.stats["instructions"], native.regs)


SELF_MODIFYING = """
    mov ecx, 3
    xor ebx, ebx
top:
    mov byte [patch + 1], cl               ; into the code just below, in the same unit
patch:
    mov al, 5
    add bl, al
    dec ecx
    jnz top
    mov al, bl
    out 0xf4, al                           ; 3 + 2 + 1
"""
READ_MODIFY_WRITE = """
    call f
    inc byte [f + 1]                       ; a store that reads what it changes: made once
    call f
    out 0xf4, al                           ; 6
f:  mov al, 5
    ret
"""


@pytest.mark.parametrize("source, value, instructions", [(SELF_MODIFYING, 6, 19), (READ_MODIFY_WRITE, 6, 8)],
                         ids=["same-unit", "read-modify-write"])
def test_a_store_into_translated_code_is_seen_at_once_and_made_once(source, value, instructions):
    """The unit the store kills may be the one it runs in (its own loop, unrolled, or a callee in
    line): the instructions after it run from the guest's new bytes. (The bare machine's own count of
    self-modifying code is not exact: Unicorn retranslates the block the store is in.)"""
    m = vmkit.machine(source, BT)
    result = m.run()
    assert result.exit_code == (value << 1) | 1 == vmkit.run(source).exit_code
    assert result.stats["instructions"] == instructions
    assert any(e.detail.get("invalidated") for e in result.of_kind("translate"))


def test_a_full_cache_is_flushed_and_the_guest_carries_on():
    blocks = "\n".join(f"b{i}: " + f"add eax, {i}\n" * 10 + f"jmp b{i + 1}" for i in range(300))
    source = f"mov ecx, 3\nagain:\n{blocks}\nb300: dec ecx\njnz again\nout 0xf4, al\n"
    m = BinaryTranslation(vmkit.assemble(source), cache_size=0x4000)
    result = m.run()
    assert result.exit_code == vmkit.run(source).exit_code
    assert m.cache.flushes >= 1 and result.stats["cache_flushes"] == m.cache.flushes


def test_the_cache_is_out_of_the_guests_reach():
    """Segment truncation: the guest's own flat segments stop below the VMM's memory."""
    source = f"""
        lidt [idtr]
        mov eax, [{CACHE_BASE:#x}]          ; read the translation cache
        mov al, 1
        out 0xf4, al
    gp: mov al, 13
        out 0xf4, al
    align 8
    idt: times 13 dq 0
        dw gp, 0x08, 0x8e00, 0x10
    idtr: dw $ - idt - 1
        dd idt
    """
    result = vmkit.run(source, BT)
    assert result.exit_code == (13 << 1) | 1              # #GP: past the segment's limit
    with pytest.raises(vmkit.GuestError, match="outside"):
        vmkit.run(source)                                  # natively there is nothing there at all


def test_an_instruction_without_a_rule_calls_out_and_is_emulated():
    rules = {name: rule for name, rule in RULES.items() if name != "cli"}
    m = BinaryTranslation(vmkit.assemble("cli\nsti\nmov al, 0\nout 0xf4, al\n"), rules=rules)
    result = m.run()
    assert [e.detail["instruction"] for e in result.of_kind("trap")] == ["cli", "out 0xf4, al"]


def test_stepping_gives_the_events_of_running():
    image = vmkit.guests.image("rings")
    ran = vmkit.run(image, BT)
    m = vmkit.machine(image, BT)
    while not m.finished:
        m.step()
    stepped = m.result()
    assert stepped.serial == ran.serial
    assert [(e.kind, e.eip) for e in stepped.events] == [(e.kind, e.eip) for e in ran.events]


def test_a_runaway_kernel_is_stopped_by_its_budget():
    with pytest.raises(vmkit.GuestTimeout) as stopped:
        vmkit.run("spin: jmp spin\n", BT, max_instructions=100_000)
    assert stopped.value.result.regs["eip"] < CACHE_BASE          # reported at the guest's address


def test_the_translator_rules_are_plain_functions_a_lab_can_replace():
    for name, rule in RULES.items():
        assert list(inspect.signature(rule).parameters) == ["u", "insn"], name


# --- where a waiting interrupt lands: exactly where it lands on the guest's own machine ------------
WINDOW_CASES = {
    "sti then a jump": "sti\njmp far_away\nnop\nfar_away: nop\nnop\n",
    "popf turning IF on": "push dword 0x202\npopf\nnop\nnop\n",
    "sti then hlt": "sti\nhlt\nnop\n",
    "sti then a taken branch": "xor eax, eax\nsti\njz far_away\nnop\nfar_away: nop\n",
    "sti then a call": "sti\ncall far_away\nfar_away: nop\nnop\n",
    "sti twice": "sti\nsti\nnop\nnop\n",      # only the sti that sets IF from 0 holds it off (SDM, STI)
}


@pytest.mark.parametrize("technique", [BT, "trap-and-emulate"])
@pytest.mark.parametrize("case", sorted(WINDOW_CASES))
def test_a_waiting_timer_interrupt_arrives_at_the_native_instruction(case, technique):
    """The timer fires while IF is off; the handler prints the address it interrupted. (popf in ring
    1 leaves IF alone without a trap: trap-and-emulate's hole, tests/test_trap_emulate.py.)"""
    if technique != BT and "popf" in case:
        pytest.skip("popf turning IF on is trap-and-emulate's hole")
    sys.path.insert(0, str(Path(__file__).parent))
    from guestkit import PIC_IRQ0_ONLY, kernel
    body = PIC_IRQ0_ONLY + """
        mov al, 0x34
        out 0x43, al
        mov al, 50
        out 0x40, al
        xor al, al
        out 0x40, al
        mov ecx, 20000
        loop $                       ; the timer fires here (after 4,190 cycles), with IF off
    """ + WINDOW_CASES[case] + "mov al, 1\nout 0xf4, al\n"
    handler = """
        mov eax, [esp]
        mov ecx, 4
        mov dx, 0x3f8
    .byte:
        out dx, al
        shr eax, 8
        loop .byte
        mov al, 2
        out 0xf4, al
    """
    native, _ = same_as_native(kernel(body=body, gates={0x20: ("tick", 0x8E)}, handlers={"tick": handler}), technique)
    assert native.exit_code == (2 << 1) | 1 and len(native.serial_bytes) == 4     # the handler ran


def test_pushf_and_popf_without_rules_are_emulated_on_the_virtual_flags():
    rules = {name: rule for name, rule in RULES.items() if name not in ("pushfd", "popfd")}
    image = vmkit.guests.image("holes")
    native = vmkit.run(image)
    bt = BinaryTranslation(image, rules=rules).run()
    assert bt.serial == native.serial
    assert {"pushfd", "popfd"} <= {e.detail["instruction"] for e in bt.of_kind("trap")}


def test_run_until_a_guest_address_stops_there_although_the_cache_runs_the_code():
    m = vmkit.machine("mov eax, 1\nadd eax, 2\nhere: add eax, 3\nmov al, 0\nout 0xf4, al\n", BT)
    m.run_until(eip=m.image.symbols["here"])
    assert m.guest_eip() == m.image.symbols["here"] and m.cpu["eax"] == 3
    assert m.run().exit_code == 1


@pytest.mark.parametrize("text,kind", [("sldt ax", "call-out"), ("str ax", "call-out"), ("lldt ax", "call-out"),
                                       ("ltr ax", "call-out"), ("verr ax", "call-out"), ("verw ax", "call-out"),
                                       ("add [eax], al", "copy")])
def test_the_0f_00_group_calls_out(text, kind):
    """sldt, str, lldt, ltr, verr and verw are 0F 00 /r: the translator must read the 00 as part of
    the opcode (capstone pads opcodes with zeros), or it copies them and sldt and str read the
    real registers, the VMM's."""
    from vmkit.vmm.emulate import decode
    from vmkit.vmm.translator import classify_instruction
    code = vmkit.assemble(f"bits 32\n{text}\n").code
    assert classify_instruction(decode(code, 0)) == kind


def benchmark(name):
    """A module of tests/benchmarks, for the guests its measurements run."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ring3_writes_next_to_translated_kernel_code_stop_reaching_the_vmm_but_code_writes_still_do():
    image = vmkit.assemble(benchmark("binary_translation").CODE_PAGE_COUNTER.format(ticks=3))
    native = vmkit.run(image)
    m = BinaryTranslation(image)
    bt = m.run()
    assert native.serial_bytes == bt.serial_bytes == b"57\n"          # the patched `digit` ran anew
    assert (bt.exit_code, bt.halted) == (native.exit_code, native.halted)
    page = 0x100000 // 4096
    assert page in m.cache.narrowed                                     # the counter's page narrowed
    assert m.cache.writes_seen < 100, f"{m.cache.writes_seen} writes reached the VMM, of the user program's ~100,000"
    assert any(e.detail.get("invalidated") for e in bt.of_kind("translate"))


# --- the budget counts the guest's own instructions ---------------------------------------------------
COUNTED = {
    "calls": benchmark("binary_translation").CALLS.format(rounds=50),
    "sieve": benchmark("run").SIEVE.format(rounds=1).replace("0x40000", "0x400").replace("0x100000", "0x1000"),
    "code_page": benchmark("binary_translation").CODE_PAGE_COUNTER.format(ticks=2),   # the PIT armed by out
}


@pytest.mark.parametrize("name", sorted(COUNTED) + ["self_modifying", "rings", "call_ret", "popf_critical",
                                  "cmp_pgfault", "cmp_compute"])
def test_binary_translation_counts_the_guest_instructions_the_bare_machine_counts(name):
    """Every instruction once when it starts, as Unicorn counts them natively: the calls, the timer's
    interrupts at the same instructions, rep movsd/stosd an instruction an iteration (cmp_compute,
    cmp_pgfault), a #PF the guest takes (cmp_pgfault), the kernel's rewrite of its own code."""
    if name.startswith("cmp_"):
        image = vmkit.assemble(compare.WORKLOADS[name[4:]].source(10))
    else:
        image = vmkit.guests.image(name) if name not in COUNTED else vmkit.assemble(COUNTED[name])
    native, bt = vmkit.run(image), vmkit.run(image, BT)
    assert bt.serial_bytes == native.serial_bytes
    assert bt.stats["instructions"] == native.stats["instructions"]
    assert bt.stats["cpu_instructions"] > bt.stats["instructions"]            # the cache's code ran too


def test_a_budget_of_the_native_count_is_enough_under_binary_translation_and_one_less_is_not():
    image = vmkit.assemble(COUNTED["calls"])
    n = vmkit.run(image).stats["instructions"]
    assert vmkit.run(image, BT, max_instructions=n).halted
    with pytest.raises(vmkit.GuestTimeout):
        vmkit.run(image, BT, max_instructions=n - 1)
    assert vmkit.run(image, BT, count_guest=False).stats["instructions"] > n     # the CPU's count, as before
