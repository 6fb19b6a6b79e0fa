"""vmkit.assemble: NASM in, an Image out, and errors that name the student's line."""
import pytest

import vmkit


def test_source_without_bits_and_org_gets_the_platforms():
    image = vmkit.assemble("start:\n  mov eax, start\n")
    assert image.origin == 0x100000 and image.code == bytes.fromhex("b800001000")
    assert image.symbols["start"] == 0x100000


def test_source_with_its_own_bits_and_org_is_left_alone():
    image = vmkit.assemble("bits 32\norg 0x100000\nnop\nhere: jmp here\n")
    assert image.code == bytes.fromhex("90ebfe") and image.symbols["here"] == 0x100001


def test_an_error_names_the_line_its_text_and_nasms_message():
    with pytest.raises(vmkit.AsmError) as info:
        vmkit.assemble("mov eax, 1\n\n  movx eax, 2\nhlt\n")
    error = info.value
    assert error.line == 3 and error.text == "  movx eax, 2"
    assert "instruction expected" in error.message
    assert str(error).startswith("line 3: movx eax, 2")


def test_an_undefined_label_is_reported_where_it_is_used():
    with pytest.raises(vmkit.AsmError) as info:
        vmkit.assemble("nop\njmp nowhere\n")
    assert info.value.line == 2 and "nowhere" in info.value.message


def test_addresses_map_back_to_source_lines_even_through_macros():
    source = "%macro PUT 1\n  mov al, %1\n  out dx, al\n%endmacro\nstart:\n  mov dx, 0x3f8\n  PUT 'a'\n  hlt\n"
    image = vmkit.assemble(source)
    put = image.symbols["start"] + 4                   # after mov dx, 0x3f8 (66 ba f8 03)
    assert image.line_of(put) == 7 and image.line_of(put + 2) == 7
    assert image.source_line(image.line_of(put + 3)) == "  hlt"


def test_the_same_source_is_assembled_once():
    assert vmkit.assemble("nop\nnop\n") is vmkit.assemble("nop\nnop\n")


def test_a_run_takes_source_directly_and_reports_asm_errors():
    with pytest.raises(vmkit.AsmError):
        vmkit.run("mov eax,\n")


def test_capstone_reads_the_code_back():
    image = vmkit.assemble("mov eax, 0x1234\nint 0x80\ncli\n")
    assert [i.text for i in image.disassemble()] == ["mov eax, 0x1234", "int 0x80", "cli"]


def test_a_section_linked_elsewhere_is_known_by_where_it_runs():
    """A higher-half kernel loads its code at one address and runs it at another (vstart): the
    machine watches its iret where it runs, so the return to user code is recorded as an iret."""
    image = vmkit.assemble(vmkit.guests.source("paging_kernel"))
    (start, length, vstart), _ = image.relocated
    assert (start, vstart) == (0x101000, 0xC0101000) and image.symbols["high_start"] == 0xC0101000
    assert image.linked(start + 5) == vstart + 5 and image.linked(0x100005) == 0x100005
    assert image.runs_at(vstart) and not image.runs_at(start) and image.runs_at(0x100000)
    causes = {e.detail["cause"] for e in vmkit.run(image).of_kind("ring-transition")}
    assert causes == {"iret", "#PF", "int 0x80"}


def test_source_lines_are_found_where_a_relocated_section_runs():
    """The listing counts each section from 0; the image maps a higher-half kernel's lines to the
    addresses its code runs at, so a stepper shows the source line, not a neighbour's."""
    image = vmkit.assemble(vmkit.guests.source("paging_kernel"))
    line = image.line_of(image.symbols["high_start"])
    assert image.source_line(line).strip().startswith("mov esp, KSTACK_TOP")
    assert image.source_line(image.line_of(image.symbols["user_main"])).strip().startswith("mov edi, eax")
    assert image.line_of(0x101000) is None                 # loaded there, but it never runs there
