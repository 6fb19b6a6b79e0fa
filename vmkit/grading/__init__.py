"""Checks for graded labs: failure messages that teach, and students' code run safely, on a budget.

A test cell in a lab reads like the idea it checks:

    from vmkit.grading import check, check_equal, run_guest, visible_checks_passed
    check_equal(decode_selector(0x2b), (5, 0, 3), what="decode_selector(0x2b)",
                hint="a selector's fields: the SDM vol. 3A, 3.4.2")
    visible_checks_passed("selectors")

Files, one idea each:
    checks.py  the checking API every lab shares: check, check_equal, check_cases, check_facts (two
               runs' facts compared, the first difference explained), visible_checks_passed
    runs.py    what the runners share: a run that goes wrong turned into a message that names it
    answers.py the kernel's side of grading: the student's answers on the grader's cases as plain
               data (answer_cases, plain), vmkit's own code refused (yours) or withheld while the
               kernel answers (withheld), runs made with vmkit as installed (on_disk)
    lab1.py .. lab10.py
               each lab's runners (a student's guest, handlers, rules, routines or loop run on a
               budget), the facts its checks compare, as plain data, and what its probes ask

Everything here runs the student's code or describes what it did; nothing here knows an answer.
The reference answers, the cases of the hidden checks and the decisions are the course's, in the
`graders` package beside `labs/` (not installed with vmkit, not in the students' copy, not in the
grading sandbox): after each graded cell the grader asks the student's kernel for its answers,
through the functions here, and decides in its own process (graders/probing.py).
"""
from .answers import NotPlain, NotYours, answer_cases, plain, raised, withheld, yours
from .checks import (check, check_cases, check_equal, check_facts, fail_cases, first_difference, shown,
                     visible_checks_passed)
from .runs import ending, explained, guest_error_message
from .lab1 import DESCRIPTOR_FIELDS, MAX_INSTRUCTIONS, TIMEOUT, interrupt_frames, run_guest
from .lab2 import VCPU_FIELDS, VMM_HINTS, VMM_MAX_INSTRUCTIONS, VMM_TIMEOUT, check_vmm_facts, run_vmm, vmm_facts
from .lab3 import (BT_MAX_INSTRUCTIONS, BT_TIMEOUT, REWRITTEN, bt_facts, check_like_native, rewritten_traps,
                   run_bt)
from .lab4 import PV_HINTS, PV_MAX_INSTRUCTIONS, PV_STATS, PV_TIMEOUT, check_pv_facts, pv_facts, run_pv
from .lab5 import (DEBUG_EXIT_PORT, LOOP_FIELDS, LOOP_HINTS, LOOP_MAX_EXITS, LOOP_TIMEOUT, MMIO_REGISTERS,
                   check_handler, check_loop_facts, exits_of, kvm_why_not, lab_devices, loop_facts, run_handlers,
                   run_user_loop)
from .lab6 import (MIGRATION_FIELDS, MIGRATION_HINTS, MIGRATION_MAX_ROUNDS, MIGRATION_MAX_SECONDS,
                   MIGRATION_WARMUP, MigrationBudget, after_rounds, check_migration_facts, migration_facts,
                   migration_guest, new_migration, round_budget, round_facts, run_precopy)
from .lab8 import (HANDLER_SECONDS, LAB_GUEST, SHADOW_COUNTS, SHADOW_FIELDS, SHADOW_HINTS, SHADOW_KINDS,
                   SHADOW_MAX_INSTRUCTIONS, SHADOW_TIMEOUT, GuestTables, budget, check_shadow_facts,
                   check_shadow_native, check_walks, guest_tables, lab_guest, run_shadow, shadow_facts, tables_case,
                   walk_results)
from .lab9 import (IDLE_DOM0, RULE_NAMES, RULE_SECONDS, XEN_HINTS, XEN_MAX_INSTRUCTIONS, XEN_TIMEOUT, LabXen,
                   budgeted_rules, check_xen_facts, frame_states, kernel_facts, new_xen, request_facts, run_kernel,
                   run_requests, table_entries)
