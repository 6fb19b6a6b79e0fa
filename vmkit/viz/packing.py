"""Pictures and a widget for vmkit.consolidation: servers before, hosts after.

    packing_plot(servers, packing)   one machine per server on the left, the packed hosts on the right
    summary(servers, packing, power) the same facts in words (the plot's text form)
    Explorer()                       sliders for fleet size, mean load and headroom; redraws both

The numbers come from vmkit.consolidation; this module only draws them.

Used by lesson 00.
"""
import html

import ipywidgets as w
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from IPython.display import display

from ..consolidation import PowerModel, first_fit_decreasing, fleet

CPU, MEMORY, LIMIT = "#1565c0", "#90caf9", "#c62828"


def packing_plot(servers, packing, *, title=""):
    """Left: each server's CPU load on its own machine. Right: each host's stacked CPU load (one
    segment per virtual machine) beside its memory, with the fill limit as a dashed line."""
    fig, (before, after) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=[1, 1.3],
                                        facecolor="white")    # a light page in a dark theme too
    loads = sorted((s.cpu for s in servers), reverse=True)
    before.bar(range(1, len(loads) + 1), loads, color=CPU, width=0.8)
    mean_before = sum(loads) / len(loads)
    before.axhline(mean_before, color="black", lw=1, ls=":")
    before.set(ylim=(0, 100), xlabel="server (one physical machine each)", ylabel="CPU utilization (%)",
               title=f"before: {len(servers)} machines, mean CPU {mean_before:.0f}%")

    for k, host in enumerate(packing.hosts, 1):
        cpu = mem = 0
        for s in host.servers:      # one segment per VM, white edges to tell them apart
            after.bar(k - 0.2, s.cpu, bottom=cpu, width=0.4, color=CPU, edgecolor="white", lw=0.6)
            after.bar(k + 0.2, s.memory, bottom=mem, width=0.4, color=MEMORY, edgecolor="white", lw=0.6)
            cpu, mem = cpu + s.cpu, mem + s.memory
    after.axhline(packing.limit, color=LIMIT, lw=1.2, ls="--")
    after.text(0.5, packing.limit + 2, f"limit {packing.limit}% (headroom {100 - packing.limit}%)",
               color=LIMIT, fontsize=9)
    after.legend(handles=[Patch(color=CPU, label="CPU (one block per VM)"), Patch(color=MEMORY, label="memory")],
                 loc="upper right", fontsize=8, framealpha=0.9)
    after.set(ylim=(0, 110), xlim=(0.3, packing.hosts_used + 0.7), xlabel="host", ylabel="utilization (%)",
              title=f"after ({packing.method}): {packing.hosts_used} hosts, "
                    f"mean CPU {packing.mean_utilization:.0f}%")
    after.set_xticks(range(1, packing.hosts_used + 1))
    if packing.hosts_used > 20:
        after.set_xticks(range(5, packing.hosts_used + 1, 5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def summary(servers, packing, power=None):
    """The plot's content in words, plus the yearly power bill before and after."""
    power = power or PowerModel()
    before, after = power.compare(servers, packing)
    mean_before = sum(s.cpu for s in servers) / len(servers)
    # short lines: they wrap badly in a notebook's output area
    return "\n".join([
        f"{len(servers)} servers at a mean CPU load of {mean_before:.0f}% fit on {packing.hosts_used} hosts "
        f"filled to at most {packing.limit}%.",
        f"That is {len(servers) / packing.hosts_used:.1f} servers per host; mean CPU utilization "
        f"{mean_before:.0f}% -> {packing.mean_utilization:.0f}%.",
        f"Power, assuming {power.idle_watts:.0f} W idle and {power.peak_watts:.0f} W at full load: "
        f"{before.watts / 1000:.1f} kW -> {after.watts / 1000:.1f} kW.",
        f"Per year at {power.price_per_kwh:.2f} per kWh: {before.kwh_per_year:,.0f} -> "
        f"{after.kwh_per_year:,.0f} kWh, costing {before.cost_per_year:,.0f} -> {after.cost_per_year:,.0f}."])


class Explorer(w.VBox):
    """Sliders for the fleet (number of servers, mean load, seed) and the headroom; every change
    draws a new fleet from the seed, packs it with first-fit decreasing and redraws."""

    def __init__(self, servers=40, mean_load=15, headroom=20, seed=1, power=None):
        self.power = power or PowerModel()
        style = {"description_width": "110px"}
        self.servers = w.IntSlider(servers, 5, 120, description="servers", style=style)
        self.mean_load = w.IntSlider(mean_load, 5, 40, description="mean CPU %", style=style)
        self.headroom = w.IntSlider(headroom, 0, 50, 5, description="headroom %", style=style)
        self.seed = w.IntSlider(seed, 0, 20, description="seed", style=style)
        self.plot = w.Output()
        self.text = w.HTML()
        for slider in (self.servers, self.mean_load, self.headroom, self.seed):
            slider.observe(lambda _: self.redraw(), names="value")
        super().__init__([w.HBox([w.VBox([self.servers, self.mean_load]), w.VBox([self.headroom, self.seed])]),
                          self.plot, self.text])
        self.redraw()

    def redraw(self):
        servers = fleet(self.servers.value, self.mean_load.value, seed=self.seed.value)
        packing = first_fit_decreasing(servers, 100 - self.headroom.value)
        self.packing = packing
        fig = packing_plot(servers, packing)
        with self.plot:
            self.plot.clear_output(wait=True)
            display(fig)
        plt.close(fig)      # drawn once, in the widget; not again by the inline backend
        self.text.value = "<br>".join(html.escape(line) for line in summary(servers, packing, self.power).split("\n"))
