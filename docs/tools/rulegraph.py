"""Draw the workflow's rule graph (`snakemake --rulegraph dot`) as an SVG, without graphviz.

    python docs/tools/rulegraph.py            # rewrites docs/images/rulegraph-local.svg and -ptolemy.svg

Snakemake prints the graph of rules as DOT; graphviz's `dot` would lay it out, but it is not a
Python package, so this draws it with matplotlib: rules in layers (a rule sits one layer below its
deepest input), arrows from each input to the rule that reads it. An arrow that a longer path
already implies is left out (the transitive reduction), so the picture stays readable; the full
graph is what `snakemake --rulegraph dot` prints. Rules marked `localrule: True` (downloads, the
report, the targets) are drawn in a second colour: they run where Snakemake runs, never as a job.

Each box and arrow carries an id (`rule:NAME`, `edge:FROM:TO`) in the SVG, so tests/test_docs.py
can check that the committed images show exactly the graph the workflow has today.
"""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
# image name -> snakemake arguments (target `all`; the cluster picture includes the optional RL stage)
GRAPHS = {
    "rulegraph-local.svg": ["--profile", "profiles/local", "all"],
    "rulegraph-ptolemy.svg": ["--profile", "profiles/ptolemy", "all", "--config", "workflow={chat_rl: true}"],
}


def rulegraph_dot(args: list[str]) -> str:
    """The DOT text `snakemake --rulegraph dot` prints for these arguments (run from the repository root)."""
    cmd = [sys.executable, "-m", "snakemake", "--rulegraph", "dot", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout


def parse_dot(dot: str) -> tuple[list[str], set[tuple[str, str]]]:
    """Rule names (in DOT order) and (input rule, consuming rule) edges of Snakemake's DOT output."""
    labels = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.MULTILINE))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)}
    return list(labels.values()), edges


def transitive_reduction(nodes: list[str], edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges not implied by a longer path (the graph is acyclic)."""
    succ = {n: {b for a, b in edges if a == n} for n in nodes}

    def reachable_without(a: str, b: str) -> bool:
        """Is b reachable from a by a path other than the edge a -> b itself?"""
        seen, todo = set(), [n for n in succ[a] if n != b]
        while todo:
            n = todo.pop()
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                todo.extend(succ[n])
        return False

    return {(a, b) for a, b in edges if not reachable_without(a, b)}


def local_rules() -> set[str]:
    """Rules declared with `localrule: True` in the workflow's files."""
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    text = "\n".join(p.read_text() for p in files)
    blocks = re.split(r"^rule ", text, flags=re.MULTILINE)[1:]
    return {block.split(":", 1)[0] for block in blocks if re.search(r"^\s+localrule:\s*True", block, re.MULTILINE)}


def layers(nodes: list[str], edges: set[tuple[str, str]]) -> tuple[list[list[str]], dict[tuple[str, str], list[str]]]:
    """Rules by depth (longest path from a rule without inputs), each layer ordered to limit crossings.

    A rule without inputs (a download) sits just above its first consumer rather than at the top. An
    arrow spanning several layers gets a waypoint in each layer it crosses, so it is routed around the
    boxes there. Returns the layers (waypoints included, named `~FROM~TO~k`) and each arrow's waypoints."""
    preds = {n: [a for a, b in edges if b == n] for n in nodes}
    succs = {n: [b for a, b in edges if a == n] for n in nodes}
    depth: dict[str, int] = {}

    def d(n: str) -> int:
        if n not in depth:
            depth[n] = 1 + max((d(p) for p in preds[n]), default=-1)
        return depth[n]

    for n in nodes:
        d(n)
    for n in nodes:
        if not preds[n] and succs[n]:
            depth[n] = min(depth[s] for s in succs[n]) - 1
    waypoints: dict[tuple[str, str], list[str]] = {}
    for a, b in sorted(edges):  # replace each long arrow by a chain through waypoints
        chain = [f"~{a}~{b}~{k}" for k in range(depth[a] + 1, depth[b])]
        waypoints[(a, b)] = chain
        hops = [a, *chain, b]
        for k, w in enumerate(chain, start=depth[a] + 1):
            depth[w] = k
        for x, y in zip(hops, hops[1:]):
            succs.setdefault(x, []).append(y)
            preds.setdefault(y, []).append(x)
    rows: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for n in depth:
        rows[depth[n]].append(n)

    def mean(values: list[float], default: float) -> float:
        return sum(values) / len(values) if values else default

    def spread(row: list[str]) -> dict[str, float]:
        return {n: (i + 0.5) / len(row) for i, n in enumerate(row)}

    pos = {n: p for row in rows for n, p in spread(row).items()}
    for sweep in range(12):  # barycentre sweeps, down then up: each rule under (over) its neighbours
        near = preds if sweep % 2 == 0 else succs
        for row in (rows[1:] if sweep % 2 == 0 else rows[-2::-1]):
            row.sort(key=lambda n: (mean([pos[m] for m in near.get(n, []) if m in pos], pos[n]), n))
            pos.update(spread(row))
    return rows, waypoints


def draw(nodes: list[str], edges: set[tuple[str, str]], local: set[str], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch
    from matplotlib.path import Path as MplPath

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "nanochat-flow", "font.family": "DejaVu Sans"})
    direct = transitive_reduction(nodes, edges)
    rows, waypoints = layers(nodes, direct)
    slot, waypoint_slot = 2.0, 0.5  # horizontal room for a rule and for an arrow passing a layer
    width = max(sum(waypoint_slot if n.startswith("~") else slot for n in row) for row in rows)
    xy = {}
    for j, row in enumerate(rows):
        x = (width - sum(waypoint_slot if n.startswith("~") else slot for n in row)) / 2
        for n in row:
            room = waypoint_slot if n.startswith("~") else slot
            xy[n] = (x + room / 2, -j)
            x += room
    fig, ax = plt.subplots(figsize=(0.95 * width + 0.4, 0.75 * len(rows) + 0.8))
    colours = {"job": "#dbe9f6", "local": "#fde6c8"}
    box_w, box_h = 1.75, 0.42
    for a, b in sorted(direct):
        points = [xy[a], *(xy[w] for w in waypoints[(a, b)]), xy[b]]
        points[0] = (points[0][0], points[0][1] - box_h / 2)
        points[-1] = (points[-1][0], points[-1][1] + box_h / 2)
        vertices, codes = [points[0]], [MplPath.MOVETO]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):  # S-curves, vertical at every layer
            bend = (y0 - y1) / 2
            vertices += [(x0, y0 - bend), (x1, y1 + bend), (x1, y1)]
            codes += [MplPath.CURVE4] * 3
        arrow = FancyArrowPatch(path=MplPath(vertices, codes), arrowstyle="-|>", mutation_scale=11,
                                color="#555555", lw=1.2)
        arrow.set_gid(f"edge:{a}:{b}")
        ax.add_patch(arrow)
    for n in nodes:
        x, y = xy[n]
        box = FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h, boxstyle="round,pad=0.02,rounding_size=0.08",
                             fc=colours["local" if n in local else "job"], ec="#4a4a4a", lw=1, zorder=3)
        box.set_gid(f"rule:{n}")
        ax.add_patch(box)
        ax.text(x, y, n, ha="center", va="center", fontsize=9.5, zorder=4)
    ax.legend(handles=[Patch(fc=colours["job"], ec="#4a4a4a", label="job (a SLURM job with the ptolemy profile)"),
                       Patch(fc=colours["local"], ec="#4a4a4a", label="local rule (always runs where snakemake runs)")],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=9)
    ax.set_xlim(0, width)
    ax.set_ylim(-len(rows) + 0.45, 0.45)
    ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Date": None} if out.suffix == ".svg" else None)
    plt.close(fig)


def svg_graph(svg: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The rules and arrows an image drawn by `draw` shows (from the ids it gave them)."""
    rules = set(re.findall(r'id="rule:([\w]+)"', svg))
    edges = {(a, b) for a, b in re.findall(r'id="edge:(\w+):(\w+)"', svg)}
    return rules, edges


def main() -> None:
    local = local_rules()
    for name, args in GRAPHS.items():
        nodes, edges = parse_dot(rulegraph_dot(args))
        draw(nodes, edges, local, IMAGES / name)
        print(f"{IMAGES / name}: {len(nodes)} rules, {len(transitive_reduction(nodes, edges))} of {len(edges)} arrows")


if __name__ == "__main__":
    main()
