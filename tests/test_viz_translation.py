"""The binary-translation pictures render real units from real runs: what each shows must be what
the translator made and what the run did."""
import re

import pytest

import vmkit
import vmkit.guests
from vmkit.viz.translation import (
    TranslationStepper,
    bt_log_line,
    cache_graph,
    callout_sites,
    cost_table,
    nasm,
    paper_table,
    side_by_side,
    translation_loop,
)

BT = "binary-translation"
CLI_UNIT = 0x100010           # holes.asm: cli; mov esi, msg_cs; mov eax, cs; call print_line


@pytest.fixture(scope="module")
def holes():
    return vmkit.guests.image("holes")


@pytest.fixture(scope="module")
def ran(holes):
    m = vmkit.machine(holes, BT)
    m.run()
    return m


def rows_of(view):
    return {piece.text: (how, [text for _, text, _ in code]) for piece, how, code in view.rows}


def test_capstone_syntax_becomes_nasm_syntax():
    assert nasm("mov dword ptr gs:[0], 0x200") == "mov dword [gs:0], 0x200"
    assert nasm("mov ecx, dword ptr gs:[ecx*8 + 0x1004]") == "mov ecx, dword [gs:ecx*8 + 0x1004]"
    assert nasm("lodsb al, byte ptr [esi]") == "lodsb al, byte [esi]"


def test_the_rewritten_cli_is_a_store_to_the_virtual_if(ran):
    view = side_by_side(ran, CLI_UNIT)
    rows = rows_of(view)
    how, code = rows["cli"]
    assert how == "rewritten" and code == ["mov dword [gs:0], 0"]
    assert rows["mov eax, cs"] == ("rewritten", ["mov eax, 8"])        # the guest's own CS, not 0x09
    assert "mov dword [gs:0], 0" in view.text and "the virtual IF" in view.text


def test_a_copied_instruction_is_the_guests_own_bytes(ran, holes):
    view = side_by_side(ran, CLI_UNIT)
    copied = [piece for piece, how, _ in view.rows if piece.how == "copied"]
    assert copied
    for piece in copied:
        guest = holes.code[piece.guest - holes.origin:piece.guest - holes.origin + piece.size]
        assert bytes(ran.uc.mem_read(piece.cache, len(piece.code))).endswith(guest)   # after a count, if any


def test_what_changed_is_highlighted_and_copies_are_not(ran):
    page = side_by_side(ran, CLI_UNIT)._repr_html_()
    colour = {}          # the first row of each guest instruction carries it, in its second cell
    for background, cells in re.findall(r"<tr style='background:(#[0-9a-f]+);border-top[^>]*>(.*?)</tr>", page):
        guest = re.findall(r"<td[^>]*>(.*?)</td>", cells)[1]
        colour[re.sub("<[^>]+>", "", guest)] = background
    assert colour["cli"] == colour["mov eax, cs"] == "#fff3b0"
    assert colour["mov esi, 0x100097"] == "#ffffff"
    assert colour["call 0x10006e"] == "#fff3b0"            # in line: a push of the return address
    assert colour["je 0x10007b"] not in ("#ffffff", "#fff3b0")


def test_an_exit_reads_chained_once_the_run_took_it(ran):
    text = side_by_side(ran, CLI_UNIT).text
    assert "exit to guest 0x100078, chained to its translation" in text
    assert "push 0x10001d                      ; the guest's return address; the unit goes on in the callee" in text


def test_an_exit_not_taken_yet_falls_into_its_call_out(holes):
    m = vmkit.machine(holes, BT)
    m.run_until(eip=CLI_UNIT)
    m.step()                                      # translates the unit and runs the rewritten cli
    text = side_by_side(m, CLI_UNIT, current=m.cpu["eip"]).text
    assert "exit to guest 0x100078, not chained yet: into the call-out below" in text
    assert re.search(r">0x[0-9a-f]{8}  mov esi, 0x100097", text)     # EIP marked on the next instruction


def test_the_sensitive_sgdt_becomes_a_call_out(ran):
    how, code = rows_of(side_by_side(ran, 0x10002e))["sgdt [0x10012e]"]
    assert how == "call-out to the VMM" and code == ["int3"]


def test_asking_for_an_address_without_a_unit_names_the_ones_there_are(ran):
    with pytest.raises(ValueError, match=r"no live translation unit starts at guest address 0x100011.*0x100010"):
        side_by_side(ran, 0x100011)


def test_a_unit_retranslated_after_the_guest_wrote_its_code_shows_the_new_code():
    image = vmkit.guests.image("self_modifying")
    m = vmkit.machine(image, BT)
    result = m.run()
    assert result.serial == "3\n7\n"
    answer = image.symbols["answer"]
    store = image.symbols["start"] + 10                   # mov dword [answer + 1], 7; then call answer
    # answer is translated in line in its callers' units: the one the store ran in among them
    assert rows_of(side_by_side(m, store + 10))["mov eax, 7"][1] == ["mov eax, 7"]
    dead = [e for e in result.of_kind("translate") if e.detail.get("invalidated")]
    assert [e.detail["guest"] for e in dead] == [image.symbols["start"], store]
    assert bt_log_line(dead[0]).endswith(f"invalidated the unit at guest {image.symbols['start']:#x}: "
                                         f"the guest wrote to its code")
    alone = [e for e in result.of_kind("translate") if e.detail.get("guest") == store and not e.detail.get("invalidated")]
    assert alone[-1].detail["instructions"] == 1          # the store ran again in a unit of its own
    assert answer in {lo for e in result.of_kind("translate") for lo, _ in e.detail.get("spans", ())}


def test_the_cache_graph_has_a_node_per_unit_and_an_edge_per_chained_exit(ran):
    g = cache_graph(ran)
    source = g.source
    units = ran.cache.units.values()
    chained = [(u, way) for u in units for way in u.exits if way.chained_to is not None]
    waiting = [(u, way) for u in units for way in u.exits if way.chained_to is None]
    assert len(re.findall(r"^\s*u[0-9a-f]+ \[label=", source, re.MULTILINE)) == len(ran.cache.units)
    assert len(re.findall(r"^\s*u[0-9a-f]+ -> \S+ \[color=\"#1f4e79\"", source, re.MULTILINE)) == len(chained) > 0
    assert len(re.findall(r"style=dashed", source)) == len(waiting) + 1      # + the ghost node's own style
    for u, way in chained:
        assert f"u{u.guest:x} -> u{way.chained_to.guest:x} [color=" in source
    assert "0x10006e–0x100078" in source and "print_line" in source
    assert 'g10008d [label="0x10008d\nnot translated"' in source             # the hex digits a-f never came up
    assert re.search(r"u100096 -> lookup \[", source)                          # ret goes through the lookup code
    assert f"{len(chained)} exits chained" in g.caption
    assert "<svg" in g.svg()


def test_the_cache_graph_text_lists_every_unit_with_its_exits(ran):
    text = cache_graph(ran).text
    assert text.startswith(f"{len(ran.cache.units)} units in the cache")
    assert "0x100010-0x10001d, 0x10006e-0x100078 -> cache" in text        # print_line translated in line
    assert "exit to 0x10008d not chained" in text


def test_the_translation_loop_carries_the_runs_counts(ran):
    result = ran.result()
    text = translation_loop(ran).text
    assert f"{result.stats['blocks_translated']} units translated" in text
    assert f"{result.stats['cache_misses']} times the cache code asked the VMM" in text
    assert f"{result.stats['traps']} call-outs" in text


def test_callout_sites_count_the_runs_own_call_outs(ran):
    result = ran.result()
    table = callout_sites(result, top=3)
    first = table.rows[0]
    outs = [e for e in result.of_kind("trap") if e.eip == 0x100078]
    assert first[:3] == ["0x00100078", "out dx, al", len(outs)]
    assert table.caption.startswith(f"{result.stats['traps']} call-outs in all")


def test_cost_table_shows_traps_and_instructions_per_technique(holes):
    runs = {t: vmkit.run(holes, t) for t in ("native", "trap-and-emulate", BT)}
    table = cost_table({"holes": runs})
    row = table.rows[0]
    assert row[0] == "holes"
    assert row[1:3] == ["0", f"{runs['native'].stats['instructions']:,}"]
    assert row[4] == f"{runs['trap-and-emulate'].stats['traps']:,}"
    assert row[7:9] == [f"{runs[BT].stats['traps']:,}", f"{runs[BT].stats['cpu_instructions']:,}"]   # the CPU's
    assert re.fullmatch(r"[\d.,]+ \([\d.]+×\)", row[9])
    assert "binary translation" in table.text.splitlines()[0]
    assert "<th colspan='3'" in table._repr_html_()


def test_paper_table_gives_adams_and_agesens_cycles():
    rows = {row[0]: row[2:] for row in paper_table().rows}
    assert rows["in"] == ["3,209", "≈214", "15,826"]
    assert rows["call/ret"] == ["11", "51", "11"]
    assert rows["ptemod"][1:] == ["391", "12,733"]
    caption = paper_table().caption
    assert "ASPLOS 2006, Figure 4" in caption and "12,733 / 391 = 33" in caption     # not "10x to 30x"


def test_the_stepper_shows_a_unit_being_translated_then_run(holes):
    s = TranslationStepper(holes)
    assert "no translation yet" in s.unit.value
    for _ in range(4):                            # lgdt, mov eax, cr0, or eax, 8, mov cr0, eax
        s.next_guest()
    assert s.machine.cpu["eip"] == CLI_UNIT
    s.step()
    assert [e.kind for e in s.last_events] == ["translate"]
    assert "guest 0x100010-0x10001d, 0x10006e-0x100078 (9 instructions)" in s.log.value     # print_line in line
    assert "mov dword [gs:0], 0" in s.unit.value and "background:#ffd54f" in s.unit.value
    assert "virtual IF 0" in s.status.value and s.machine.cpu["eflags"] & 0x200      # the real IF stays on
    s.next_guest()
    s.next_guest()                                # mov eax, cs
    assert s.machine.cpu["eax"] == 0x08
    for _ in range(9):                            # the call's push, then print_line's push eax, mov dx, lodsb, the
        s.step()                                  # count, test, je (not taken), the exit's jmp, the call-out
    assert s.last_events and s.last_events[-1].detail["guest"] == 0x100078
    s.render()
    assert "0x100078" in s.unit.value
    assert "chained exits 1" in s.status.value


def test_the_stepper_runs_to_the_end_with_the_native_answers(holes):
    s = TranslationStepper(holes)
    s.run()
    assert s.machine.finished and "The guest has finished." in s.unit.value
    assert "cs                  = 00000008" in s.serial.value
    assert s.buttons["guest instruction"].disabled
