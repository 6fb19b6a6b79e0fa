"""Server consolidation: many lightly loaded servers packed as virtual machines onto few hosts.

This is the economic case for virtualization as a small, reproducible model. A fleet of servers
is drawn from a seed; each server's CPU and memory load is a whole percentage of one host of the
same size (the server it used to run on alone). Packing the fleet onto hosts is two-dimensional
bin packing: a host takes servers while their summed CPU *and* summed memory stay at or under a
limit, the host's capacity minus the **headroom** kept free for load peaks and for moving VMs.

    fleet(20, mean_load=15, seed=1)      servers with loads drawn from random.Random(seed)
    first_fit_decreasing(servers, 80)    the heuristic operators use: biggest first, first host that fits
    optimal(servers, 80)                 the fewest hosts possible (branch and bound; small fleets only)
    lower_bound(servers, 80)             no packing can use fewer hosts than this
    PowerModel().compare(servers, p)     watts, kWh and money per year before and after

Loads are integers so that "fits" is exact and the optimum is really optimal. Nothing here is
measured: the fleet is synthetic, and the power figures are whatever the caller assumes.
"""
import math
import random
from dataclasses import dataclass, field

# an exact search over more servers than this can take minutes; FFD has no such limit
OPTIMAL_MAX_SERVERS = 14


@dataclass(frozen=True)
class Server:
    """One workload, its load in percent of one host's CPU and memory."""
    name: str
    cpu: int
    memory: int

    @property
    def size(self):
        # the dimension that fills a host first decides how hard a server is to place
        return max(self.cpu, self.memory)


@dataclass
class Host:
    """One physical machine running some of the servers as virtual machines."""
    servers: list = field(default_factory=list)

    @property
    def cpu(self):
        return sum(s.cpu for s in self.servers)

    @property
    def memory(self):
        return sum(s.memory for s in self.servers)

    def fits(self, server, limit):
        return self.cpu + server.cpu <= limit and self.memory + server.memory <= limit


@dataclass
class Packing:
    """Where each server went. `limit` is the fill limit in percent (100 minus the headroom)."""
    method: str
    limit: int
    hosts: list

    @property
    def hosts_used(self):
        return len(self.hosts)

    @property
    def servers(self):
        return [s for h in self.hosts for s in h.servers]

    @property
    def utilization(self):
        """CPU utilization of each host, in percent."""
        return [h.cpu for h in self.hosts]

    @property
    def memory_utilization(self):
        return [h.memory for h in self.hosts]

    @property
    def mean_utilization(self):
        """Average CPU utilization over the hosts, in percent: the figure consolidation raises."""
        return sum(self.utilization) / len(self.hosts) if self.hosts else 0.0

    def __str__(self):
        lines = [f"{self.method}: {self.hosts_used} hosts, filled to at most {self.limit}% "
                 f"(mean CPU {self.mean_utilization:.0f}%)"]
        for k, h in enumerate(self.hosts, 1):
            names = " ".join(s.name for s in h.servers)
            lines.append(f"  host {k:2}: cpu {h.cpu:3}%  mem {h.memory:3}%  {names}")
        return "\n".join(lines)


def fleet(n, mean_load=15, seed=0, *, mean_memory=None, max_load=50):
    """`n` servers whose CPU and memory loads (percent) are drawn from random.Random(seed).

    Loads follow a gamma distribution (many small, a few busy servers, as utilization surveys of
    data centres report), rounded to whole percent and clipped to 1..max_load, so every server
    fits on a host whatever headroom above 100 - max_load is chosen.
    """
    rng = random.Random(seed)
    mean_memory = mean_load if mean_memory is None else mean_memory

    def draw(mean):
        # shape 2: right-skewed, mean = shape * scale
        return min(max_load, max(1, round(rng.gammavariate(2.0, mean / 2.0))))

    return [Server(f"srv{k:02}", draw(mean_load), draw(mean_memory)) for k in range(1, n + 1)]


def with_overhead(servers, percent):
    """The same servers with their CPU load raised by `percent` percent: the hypervisor's cost.
    Virtualization adds work; consolidation wins only because most servers were idle."""
    return [Server(s.name, math.ceil(s.cpu * (100 + percent) / 100), s.memory) for s in servers]


def _check(servers, limit):
    if not 0 < limit <= 100:
        raise ValueError(f"the fill limit must be 1..100 percent, not {limit}")
    for s in servers:
        if s.cpu > limit or s.memory > limit:
            raise ValueError(f"{s.name} (cpu {s.cpu}%, memory {s.memory}%) does not fit on an empty "
                             f"host filled to at most {limit}%: lower the headroom")


def lower_bound(servers, limit=80):
    """No packing can use fewer hosts: the total load of the busier dimension over one host's limit."""
    if not servers:
        return 0
    return max(math.ceil(sum(s.cpu for s in servers) / limit),
               math.ceil(sum(s.memory for s in servers) / limit))


def first_fit_decreasing(servers, limit=80):
    """Sort the servers biggest first; put each on the first host it fits, or on a new host.
    Fast and usually within a host or two of the optimum; what placement tools start from."""
    _check(servers, limit)
    hosts = []
    for s in sorted(servers, key=lambda s: (s.size, s.cpu + s.memory), reverse=True):
        host = next((h for h in hosts if h.fits(s, limit)), None)
        if host is None:
            host = Host()
            hosts.append(host)
        host.servers.append(s)
    return Packing("first-fit decreasing", limit, hosts)


def optimal(servers, limit=80):
    """The fewest hosts that can hold the servers: branch and bound over host assignments.

    Servers go biggest first; each is tried on every open host it fits and on one new host.
    A branch stops as soon as it cannot beat the best packing found (FFD's, to start with), and
    the search stops outright when it reaches the lower bound. Hosts that are equally full are
    tried once only, since swapping them gives the same packing.
    """
    _check(servers, limit)
    if len(servers) > OPTIMAL_MAX_SERVERS:
        raise ValueError(f"an exact search over {len(servers)} servers may take very long; "
                         f"use at most {OPTIMAL_MAX_SERVERS} (or first_fit_decreasing)")
    order = sorted(servers, key=lambda s: (s.size, s.cpu + s.memory), reverse=True)
    best = first_fit_decreasing(servers, limit)
    bound = lower_bound(servers, limit)
    if best.hosts_used == bound:
        return Packing("optimal", limit, best.hosts)
    best_hosts = [list(h.servers) for h in best.hosts]
    loads = []          # (cpu, memory) of each open host
    placed = []         # the servers on each open host

    def search(i):
        nonlocal best_hosts
        if len(loads) >= len(best_hosts):
            return False                    # cannot beat the best any more
        if i == len(order):
            best_hosts = [list(p) for p in placed]
            return len(best_hosts) == bound  # reaching the bound ends the search
        s = order[i]
        tried = set()
        for k, (cpu, mem) in enumerate(loads):
            if (cpu, mem) in tried or cpu + s.cpu > limit or mem + s.memory > limit:
                continue
            tried.add((cpu, mem))
            loads[k] = (cpu + s.cpu, mem + s.memory)
            placed[k].append(s)
            done = search(i + 1)
            placed[k].pop()
            loads[k] = (cpu, mem)
            if done:
                return True
        loads.append((s.cpu, s.memory))
        placed.append([s])
        done = search(i + 1)
        placed.pop()
        loads.pop()
        return done

    search(0)
    return Packing("optimal", limit, [Host(servers) for servers in best_hosts])


@dataclass(frozen=True)
class Cost:
    """What running some machines costs over a year."""
    machines: int
    watts: float
    kwh_per_year: float
    cost_per_year: float


@dataclass(frozen=True)
class PowerModel:
    """A linear power model: a machine draws `idle_watts` doing nothing and `peak_watts` at full
    load, proportionally in between. An idle server still draws most of its peak power, which is
    why switching off lightly loaded machines saves so much. The defaults are assumptions for a
    two-socket server, not measurements; put in your own."""
    idle_watts: float = 150.0
    peak_watts: float = 300.0
    price_per_kwh: float = 0.30
    hours_per_year: float = 8760.0

    def watts(self, utilization):
        """Power drawn by one machine at `utilization` percent CPU."""
        return self.idle_watts + (self.peak_watts - self.idle_watts) * utilization / 100

    def cost(self, utilizations):
        """The yearly cost of machines running at these CPU utilizations (percent)."""
        watts = sum(self.watts(u) for u in utilizations)
        kwh = watts * self.hours_per_year / 1000
        return Cost(len(utilizations), watts, kwh, kwh * self.price_per_kwh)

    def compare(self, servers, packing):
        """(before, after): each server on its own machine, then the packed hosts."""
        return self.cost([s.cpu for s in servers]), self.cost(packing.utilization)
