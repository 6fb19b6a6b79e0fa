"""The caller's mistakes are the caller's: a budget that is not a positive number, an option the
technique does not take (misspelled, or another technique's), a guest that is not NASM text, and
an instruction budget real KVM cannot keep each get an error that says what is accepted, before
anything runs, under every technique they apply to."""
import pytest

import vmkit
from vmkit.kvm.probe import probe
from vmkit.run import TECHNIQUES

COUNTING = [t for t in TECHNIQUES if t != "kvm"]


@pytest.mark.parametrize("source", [42, None, b"hlt", ["hlt"]])
def test_a_guest_that_is_not_text_is_a_type_error_that_says_what_a_guest_is(source):
    with pytest.raises(TypeError, match="NASM source"):
        vmkit.run(source)


@pytest.mark.parametrize("technique", COUNTING)
@pytest.mark.parametrize("budget, error", [(1e3, TypeError), ("100", TypeError), (True, TypeError),
                                           (0, ValueError), (-5, ValueError)])
def test_an_instruction_budget_must_be_a_positive_whole_number(technique, budget, error):
    with pytest.raises(error, match="max_instructions must be"):
        vmkit.run("hlt", technique, max_instructions=budget)
    with pytest.raises(error, match="max_instructions must be"):
        vmkit.machine("hlt", technique, max_instructions=budget)


@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (0, ValueError), (float("nan"), ValueError),
                                            (float("inf"), ValueError), ("5", TypeError)])
def test_a_timeout_must_be_a_positive_finite_number_of_seconds(technique, timeout, error):
    with pytest.raises(error, match="timeout must be"):
        vmkit.run("hlt", technique, timeout=timeout)


@pytest.mark.parametrize("technique", COUNTING)
def test_a_misspelled_option_names_the_right_spelling(technique):
    with pytest.raises(TypeError, match="did you mean 'max_instructions'"):
        vmkit.run("hlt", technique, max_instruction=100)


def test_another_techniques_option_says_which_technique_takes_it():
    with pytest.raises(TypeError, match="native takes no option 'vcpus'; kvm takes it"):
        vmkit.run("hlt", vcpus=2)
    with pytest.raises(TypeError, match="trap-and-emulate takes no option 'controls'; hardware-assist takes it"):
        vmkit.machine("hlt", "trap-and-emulate", controls=None)


def test_kvm_refuses_an_instruction_budget_it_cannot_keep_and_a_number_of_vcpus_below_one():
    with pytest.raises(ValueError, match="kvm cannot count a guest's instructions"):
        vmkit.run("hlt", "kvm", max_instructions=100)
    with pytest.raises(ValueError, match="vcpus must be a whole number"):
        vmkit.run("hlt", "kvm", vcpus=0)


def test_the_default_budgets_are_accepted_everywhere():
    assert vmkit.run("hlt").halted
    if probe().usable:
        assert vmkit.run("hlt", "kvm").halted


# --- random values at the public API: an error vmkit meant, never a raw one ---------------------------------
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from vmkit.arguments import keyword_options  # noqa: E402
from vmkit.run import MACHINES  # noqa: E402

ANYTHING = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                     st.text(max_size=8), st.binary(max_size=8), st.lists(st.integers(), max_size=2))
MEANT = (TypeError, ValueError, vmkit.VmkitError)


OPTIONS = {technique: sorted(keyword_options(MACHINES[technique])) for technique in COUNTING}


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), technique=st.sampled_from(COUNTING),
       max_instructions=st.one_of(st.just(100_000), st.just(None), st.just(100_000), ANYTHING),
       timeout=st.one_of(st.just(5), st.just(None), st.just(5), ANYTHING),
       memory=st.one_of(st.just(4 << 20), st.just(4 << 20), st.just(4 << 20), ANYTHING))
def test_random_arguments_get_an_error_vmkit_meant(data, technique, max_instructions, timeout, memory):
    """Whatever a caller passes (budgets, memory, and a random value for one of the technique's own
    options or a misspelled one), vmkit.run ends normally or with TypeError, ValueError or a vmkit
    error that says what went wrong: never a ctypes, attribute or index error from inside."""
    option = data.draw(st.sampled_from(OPTIONS[technique] + ["max_instruction"]), label="option")
    kwargs = {"max_instructions": max_instructions, "timeout": timeout, "memory": memory,
              option: data.draw(ANYTHING, label="value")}
    try:
        vmkit.run("mov eax, 1\nhlt\n", technique, **kwargs)
    except MEANT as error:
        assert str(error), f"{type(error).__name__} with no message"
