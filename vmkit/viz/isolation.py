"""Pictures and a widget for vmkit.isolation: sVirt's two VMs, and what DAC and sVirt decide.

    svirt_diagram(s=None)                the scenario's processes and images with their labels -> Diagram
    access_walker(s=None, policy=None)   a widget: pick an access; see DAC's answer, sVirt's, the audit line

Used by lesson 09. The decisions come from vmkit.isolation (scenario(), Access.dac, Access.svirt);
this module only draws them.
"""
import html

import ipywidgets as w

from ..isolation import scenario
from .diagram import Diagram


def svirt_diagram(s=None):
    """The scenario's processes and files with their labels: which accesses DAC and sVirt allow."""
    s = s or scenario()
    d = Diagram(caption="sVirt: each VM's QEMU and its image share a category pair; DAC sees one uid, qemu",
                text="")
    d.attr(rankdir="LR", fontname="Helvetica", nodesep="0.3")
    d.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="11")
    d.attr("edge", fontname="Helvetica", fontsize="10")
    lines = []
    for n, (proc, image) in enumerate(s.vms, 1):
        with d.subgraph(name=f"cluster_vm{n}") as c:
            c.attr(label=f"VM {n}: categories {str(proc.context.low).partition(':')[2]}", style="rounded",
                   color="#1565c0", fontname="Helvetica")
            c.node(f"p{n}", f"QEMU, pid {proc.pid}\\nuid {proc.user} ({proc.uid})\\n{proc.context}", fillcolor="#e3f2fd")
            c.node(f"i{n}", f"{image.path}\\nowner qemu, mode {image.mode:04o}\\n{image.context}", fillcolor="#fff8e1")
        d.edge(f"p{n}", f"i{n}", "read, write, map: allowed", color="#2e7d32", fontcolor="#2e7d32")
        lines.append(f"VM {n}: QEMU pid {proc.pid}, uid {proc.user}, context {proc.context}; "
                     f"its image {image.path}, owner qemu, mode {image.mode:04o}, context {image.context}. "
                     f"VM {n} may read, write and map its own image.")
    d.node("iso", f"{s.shared.path}\\nmode {s.shared.mode:04o}\\n{s.shared.context}", fillcolor="#f1f8e9")
    for n in (1, 2):
        d.edge(f"p{n}", "iso", "read", color="#2e7d32", fontcolor="#2e7d32")
    d.edge("p1", "i2", "open / write / mmap: DAC allows (same uid),\\nsVirt denies (MCS: VM 1 does not dominate VM 2)",
           color="#b71c1c", fontcolor="#b71c1c", style="dashed", constraint="false")
    lines.append(f"Both VMs may read the shared ISO {s.shared.path}, labelled {s.shared.context}: every level "
                 "dominates s0.")
    lines.append("VM 1's QEMU trying to open, write or mmap VM 2's image: DAC allows it (same uid, owner bits "
                 "rw-); sVirt denies it (VM 1's categories do not dominate VM 2's).")
    d.text = "\n".join(lines)
    return d


def access_walker(s=None, policy=None):
    """A small widget: pick an access of the scenario; see DAC's answer, sVirt's, and the audit line."""
    s = s or scenario()
    ok, bad = "var(--jp-success-color0, #1b5e20)", "var(--jp-error-color0, #b71c1c)"
    pick = w.Dropdown(options=[(f"{i + 1}. {a.what}", i) for i, a in enumerate(s.accesses)], value=0,
                      layout=w.Layout(width="auto"))
    back, forward = w.Button(description="◀ previous"), w.Button(description="next ▶")
    panel = w.HTML()

    def verdict(allowed, words):
        colour, mark = (ok, "✔ allowed") if allowed else (bad, "✘ denied")
        return f"<span style='color:{colour}'><b>{mark}</b></span> {html.escape(words)}"

    def show(_=None):
        a = s.accesses[pick.value]
        dac, mac = a.dac(), a.svirt(policy)
        audit = mac.audit()
        panel.value = (
            f"<div style='font-size:95%'><b>{html.escape(a.process.comm)} (pid {a.process.pid}, uid "
            f"{a.process.uid}, {html.escape(str(a.process.context))})</b> → <code>{html.escape(a.name)}</code>"
            f"<br>the kernel checks <code>{{ {' '.join(a.perms)} }}</code> on class <code>{a.tclass}</code>, "
            f"target <code>{html.escape(str(a.obj.context))}</code>"
            f"<p><b>DAC</b>: {verdict(dac.allowed, dac.reason)}</p>"
            f"<p><b>sVirt (SELinux TE + MCS)</b>: {verdict(mac.allowed, '')}</p>"
            f"<pre style='white-space:pre-wrap'>{html.escape(mac.explain())}</pre>"
            + (f"<b>audit log</b><pre style='white-space:pre-wrap'>{html.escape(audit)}</pre>" if audit else
               "<i>no audit record: nothing was denied</i>") + "</div>")

    def move(step):
        pick.value = (pick.value + step) % len(s.accesses)

    pick.observe(show, names="value")
    back.on_click(lambda _: move(-1))
    forward.on_click(lambda _: move(+1))
    show()
    box = w.VBox([w.HBox([back, forward, pick]), panel])
    box.add_class("vmkit-access-walker")
    return box
