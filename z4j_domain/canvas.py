"""The canvas view: a task's whole chain, group or chord as a top-down layered graph.

Celery links a canvas's tasks with ids that each task carries (see
:class:`~z4j_domain.tasks.Task`): ``parent_id`` names the task whose completion
or body published this one (a chain step names the step before it),
``group_id`` is shared by the members of a group or chord header, and
``chord_id`` (on a chord's header tasks) names the chord's callback.

**Gathering** (:class:`CanvasGathering`). A canvas is every task connected to
the given one by any of those links, or by a shared ``root_id``: not just "the
root and every task naming it", because a chord or group applied from outside a
task makes each of its header tasks a root of its own. Storage finds it in
rounds of index lookups (:class:`CanvasLinks`), at most a given number of tasks.

**The graph** (:func:`build_graph`). One node per task; an edge of kind
``parent`` from ``parent_id`` to the task, and one of kind ``chord`` from every
header task to its callback: the fan-in. Celery publishes the callback from the
header task that finished last, so the callback's ``parent_id`` names one of its
headers; the pair is drawn once, as the ``chord`` edge. Self-links are ignored.

* *Links to tasks z4j has not stored* become **placeholder nodes**
  (``missing``): a chord's callback is published only when its header is done,
  so until then the fan-in would otherwise have nowhere to go, and a parent the
  brain never heard of is still a fact worth showing. Placeholders have no
  state, name or runtime.
* *Duplicates* (the same task id twice) are joined with the fold's
  :func:`~z4j_domain.tasks.merge`, in an order of their own, so the input's
  order never matters.
* *The cap.* At most ``max_nodes`` nodes (default :data:`MAX_NODES`): tasks
  first, oldest first by ``(first_seen_at, id)``, then placeholders by id.
  What does not fit is counted in ``omitted`` and the graph says
  ``truncated``; links to tasks that were cut are dropped, not turned into
  placeholders.
* *Cycles* (bad data: ``a`` names ``b`` as parent and ``b`` names ``a``) are
  broken deterministically: inside each strongly connected component, edges are
  taken ``chord`` edges first, then edges from an earlier-seen task to a
  later-seen one, then by position, and an edge that would close a cycle is left
  out of the graph and listed in ``ignored``.

**The layout** (:func:`layout`), Sugiyama style:

1. *Layers*: longest path from the sources, so every edge points strictly down
   and a chord's callback sits below all of its header tasks. A source that is
   not a group member (a placeholder parent, say) is then pulled down to just
   above its highest child, and the members of one group are moved down into
   one layer wherever their children leave room.
2. *Long edges* get a bend point in every layer they cross (at most
   :data:`BENDS_PER_NODE` per node in all, shortest edges first; beyond that an
   edge is drawn straight).
3. *Order within layers*: an initial top-down pass by the barycenter of each
   node's parents (ties keep a group's members together, then oldest first),
   then alternating up and down barycenter sweeps; the order with the fewest
   crossings wins, so a canvas that is a tree (chains and groups, no chords) is
   drawn with none.
4. *Coordinates*: node centres at least ``NODE_WIDTH + NODE_GAP`` apart in a
   layer, layers ``LAYER_SPACING`` apart; a few passes pull each node towards
   the mean of its neighbours (parents, then children) under those spacing
   constraints, solved exactly per layer by isotonic regression.

Every step orders by the nodes' canonical order (tasks by first seen, then
placeholders by id), never by the input's, so the same tasks in any order give
the same layout.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from z4j_domain.encoding import utc_isoformat
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import Task, TaskState, merge

__all__ = [
    "BENDS_PER_NODE",
    "LAYER_SPACING",
    "MAX_NODES",
    "MAX_ROUNDS",
    "NODE_GAP",
    "NODE_HEIGHT",
    "NODE_WIDTH",
    "CanvasEdge",
    "CanvasGathering",
    "CanvasGraph",
    "CanvasLayout",
    "CanvasLinks",
    "CanvasNode",
    "EdgeKind",
    "PlacedEdge",
    "PlacedNode",
    "build_graph",
    "layout",
    "layout_canvas",
]

#: Most nodes (tasks and placeholders) one canvas is drawn with.
MAX_NODES: Final = 2_000
#: Most rounds of link lookups that gather one canvas (see :class:`CanvasGathering`).
#: Celery's canvases need a few (a chord applied from outside a task: one round
#: that finds the other tasks, one that finds nothing new); the bound is for bad
#: link data.
MAX_ROUNDS: Final = 32
#: A node's box, in layout units; ``x`` and ``y`` are the box's centre.
NODE_WIDTH: Final = 160
NODE_HEIGHT: Final = 48
#: Least horizontal space between two boxes of one layer.
NODE_GAP: Final = 40
#: Vertical distance between the centres of two adjacent layers.
LAYER_SPACING: Final = 100
#: Bend points the long edges of a layout may use in all, per node: a bound on
#: the work bad data (a link spanning hundreds of layers) can cause.
BENDS_PER_NODE: Final = 8

#: Rounds of barycenter sweeps after the initial order (each one up or down).
_SWEEPS: Final = 8
#: Rounds of (down, up) passes that pull nodes towards their neighbours.
_PLACEMENT_ROUNDS: Final = 4
_HALF_WIDTH: Final = NODE_WIDTH // 2


class EdgeKind(enum.StrEnum):
    """Why one task is drawn above another."""

    #: The source published the target: the target's ``parent_id``.
    PARENT = "parent"
    #: The source is a header task of the chord whose callback is the target.
    CHORD = "chord"


@attrs.frozen(kw_only=True)
class CanvasNode:
    """One task of a canvas, or a placeholder for a task that is linked but not stored."""

    id: str
    name: str | None = None
    #: ``None`` for a placeholder.
    state: TaskState | None = None
    runtime: float | None = None
    first_seen_at: datetime | None = None
    group_id: str | None = None
    #: Linked to by some task, but not stored (or not sent yet).
    missing: bool = False
    #: Some header task names this node as its chord's callback.
    chord_callback: bool = False
    #: A member of the group ``group_id`` (a chord's callback, which Celery
    #: stamps with its header's group id, is not one).
    group_member: bool = False


@attrs.frozen(kw_only=True)
class CanvasEdge:
    """An edge from the task drawn above to the task drawn below."""

    source: str
    target: str
    kind: EdgeKind


@attrs.frozen(kw_only=True)
class CanvasGraph:
    """A canvas's nodes (in canonical order) and its edges (acyclic), before layout."""

    nodes: tuple[CanvasNode, ...]
    edges: tuple[CanvasEdge, ...]
    #: Edges left out because they would have closed a cycle (bad link data).
    ignored: tuple[CanvasEdge, ...] = ()
    #: Tasks and placeholders left out by the cap.
    omitted: int = 0

    @property
    def truncated(self) -> bool:
        """Whether the cap left something out."""
        return self.omitted > 0


@attrs.frozen(kw_only=True)
class PlacedNode:
    """A node with its place: layer (0 at the top), order within the layer, centre."""

    node: CanvasNode
    layer: int
    order: int
    x: int
    y: int


@attrs.frozen(kw_only=True)
class PlacedEdge:
    """An edge and the points it is drawn through, from the source's centre to the target's."""

    edge: CanvasEdge
    points: tuple[tuple[int, int], ...]


@attrs.frozen(kw_only=True)
class CanvasLayout:
    """A laid-out canvas: what the dashboard draws."""

    #: By layer, then order within the layer.
    nodes: tuple[PlacedNode, ...]
    edges: tuple[PlacedEdge, ...]
    ignored: tuple[CanvasEdge, ...]
    omitted: int
    layers: int
    #: The bounding box of every box and bend point; the top-left corner is (0, 0).
    width: int
    height: int

    @property
    def truncated(self) -> bool:
        """Whether the cap left something out."""
        return self.omitted > 0

    def to_dict(self) -> dict[str, Any]:
        """The layout as JSON types, for the API."""
        return {
            "nodes": [_placed_node_to_dict(placed) for placed in self.nodes],
            "edges": [
                {**_edge_to_dict(placed.edge), "points": [list(p) for p in placed.points]}
                for placed in self.edges
            ],
            "ignored_edges": [_edge_to_dict(edge) for edge in self.ignored],
            # Not ``omitted``: a caller that asked storage for one more task than
            # fits knows only that something was cut, not how much.
            "truncated": self.truncated,
            "layers": self.layers,
            "width": self.width,
            "height": self.height,
            "node_width": NODE_WIDTH,
            "node_height": NODE_HEIGHT,
        }


def _edge_to_dict(edge: CanvasEdge) -> dict[str, Any]:
    return {"source": edge.source, "target": edge.target, "kind": edge.kind.value}


def _placed_node_to_dict(placed: PlacedNode) -> dict[str, Any]:
    node = placed.node
    return {
        "id": node.id,
        "name": node.name,
        "state": None if node.state is None else node.state.value,
        "runtime": node.runtime,
        "first_seen_at": None if node.first_seen_at is None else utc_isoformat(node.first_seen_at),
        "group_id": node.group_id,
        "missing": node.missing,
        "chord_callback": node.chord_callback,
        "group_member": node.group_member,
        "layer": placed.layer,
        "order": placed.order,
        "x": placed.x,
        "y": placed.y,
    }


# -- the graph ------------------------------------------------------------------------


def _unique(tasks: Iterable[Task]) -> dict[str, Task]:
    """One task per id; duplicates joined with the fold's merge, in an order of their own."""
    copies: dict[str, list[Task]] = {}
    for task in tasks:
        copies.setdefault(task.id, []).append(task)
    unique: dict[str, Task] = {}
    for task_id, found in copies.items():
        if len(found) > 1:
            # merge breaks exact ties of its state key by argument order; a
            # total order of the copies makes even that independent of the input.
            found.sort(
                key=lambda t: (t.state_key, t.state.value, -1.0 if t.runtime is None else t.runtime)
            )
        joined = found[0]
        for other in found[1:]:
            joined = merge(joined, other)
        unique[task_id] = joined
    return unique


def build_graph(tasks: Iterable[Task], *, max_nodes: int = MAX_NODES) -> CanvasGraph:
    """The canvas graph of ``tasks``: nodes, acyclic edges, what was ignored and cut.

    See the module's documentation for placeholders, the cap and cycles.
    ``max_nodes`` below 1 raises :class:`~z4j_domain.errors.InvalidInput`.
    """
    if max_nodes < 1:
        raise InvalidInput(f"max_nodes must be at least 1, got {max_nodes}")
    by_id = _unique(tasks)
    ordered = sorted(by_id.values(), key=lambda t: (t.first_seen_at, t.id))
    kept = ordered[:max_nodes]
    omitted = len(ordered) - len(kept)

    links: list[tuple[str, str, EdgeKind]] = []
    for task in kept:
        if task.parent_id is not None and task.parent_id != task.id:
            links.append((task.parent_id, task.id, EdgeKind.PARENT))
        if task.chord_id is not None and task.chord_id != task.id:
            links.append((task.id, task.chord_id, EdgeKind.CHORD))
    unknown = sorted({end for source, target, _ in links for end in (source, target)} - set(by_id))
    placeholders = unknown[: max_nodes - len(kept)]
    omitted += len(unknown) - len(placeholders)

    present = {task.id for task in kept} | set(placeholders)
    kinds: dict[tuple[str, str], EdgeKind] = {}
    for source, target, kind in links:
        if source not in present or target not in present:
            continue
        # A chord's callback names one of its headers as parent: one edge, the chord's.
        if kinds.get((source, target)) is not EdgeKind.CHORD:
            kinds[(source, target)] = kind
    header_groups: dict[str, set[str | None]] = {}
    for (source, target), kind in kinds.items():
        if kind is EdgeKind.CHORD:
            header_groups.setdefault(target, set()).add(by_id[source].group_id)

    nodes = [
        CanvasNode(
            id=task.id,
            name=task.name,
            state=task.state,
            runtime=task.runtime,
            first_seen_at=task.first_seen_at,
            group_id=task.group_id,
            chord_callback=task.id in header_groups,
            group_member=task.group_id is not None
            and task.group_id not in header_groups.get(task.id, ()),
        )
        for task in kept
    ]
    nodes.extend(
        CanvasNode(id=node_id, missing=True, chord_callback=node_id in header_groups)
        for node_id in placeholders
    )
    rank = {node.id: i for i, node in enumerate(nodes)}
    edges = sorted(
        (CanvasEdge(source=s, target=t, kind=kind) for (s, t), kind in kinds.items()),
        key=lambda e: (rank[e.source], rank[e.target]),
    )
    kept_edges, ignored = _break_cycles(len(nodes), edges, rank)
    return CanvasGraph(nodes=tuple(nodes), edges=kept_edges, ignored=ignored, omitted=omitted)


def _break_cycles(
    n: int, edges: Sequence[CanvasEdge], rank: Mapping[str, int]
) -> tuple[tuple[CanvasEdge, ...], tuple[CanvasEdge, ...]]:
    """Split ``edges`` into an acyclic set and the edges left out to make it so."""
    successors: list[list[int]] = [[] for _ in range(n)]
    for edge in edges:
        successors[rank[edge.source]].append(rank[edge.target])
    component = _strongly_connected(successors)
    within: dict[int, list[CanvasEdge]] = {}
    for edge in edges:
        c = component[rank[edge.source]]
        if c == component[rank[edge.target]]:
            within.setdefault(c, []).append(edge)
    if not within:
        return tuple(edges), ()
    ignored: list[CanvasEdge] = []
    for cyclic in within.values():
        cyclic.sort(
            key=lambda e: (
                e.kind is not EdgeKind.CHORD,
                rank[e.source] > rank[e.target],
                rank[e.source],
                rank[e.target],
            )
        )
        accepted: dict[int, list[int]] = {}
        for edge in cyclic:
            source, target = rank[edge.source], rank[edge.target]
            if _reaches(accepted, target, source):
                ignored.append(edge)
            else:
                accepted.setdefault(source, []).append(target)
    left_out = set(ignored)
    ignored.sort(key=lambda e: (rank[e.source], rank[e.target]))
    return tuple(e for e in edges if e not in left_out), tuple(ignored)


def _reaches(successors: Mapping[int, Sequence[int]], start: int, goal: int) -> bool:
    """Whether ``goal`` can be reached from ``start`` along ``successors``."""
    seen = {start}
    stack = [start]
    while stack:
        v = stack.pop()
        if v == goal:
            return True
        for w in successors.get(v, ()):
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return False


def _strongly_connected(successors: Sequence[Sequence[int]]) -> list[int]:
    """Tarjan's strongly connected components, without recursion: a component id per vertex."""
    n = len(successors)
    index = [-1] * n
    low = [0] * n
    on_stack = [False] * n
    component = [-1] * n
    stack: list[int] = []
    counter = components = 0
    for root in range(n):
        if index[root] != -1:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work = [(root, 0)]
        while work:
            v, i = work[-1]
            if i < len(successors[v]):
                work[-1] = (v, i + 1)
                w = successors[v][i]
                if index[w] == -1:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    component[w] = components
                    if w == v:
                        break
                components += 1
    return component


# -- gathering a canvas -------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CanvasLinks:
    """One round of gathering a canvas: the lookups that find the tasks linked to the last round's.

    A task is linked when its ``root_id`` is one of ``root_ids``, its
    ``group_id`` one of ``group_ids``, its ``chord_id`` one of ``chord_ids``,
    or its own id one of ``task_ids``: four index lookups, by
    ``(project, root_id)``, ``(project, group_id)``, ``(project, chord_id)`` and
    the primary key. An empty set asks nothing.
    """

    root_ids: frozenset[str] = frozenset()
    group_ids: frozenset[str] = frozenset()
    chord_ids: frozenset[str] = frozenset()
    task_ids: frozenset[str] = frozenset()

    def matches(self, task: Task) -> bool:
        """Whether one of the lookups finds ``task``."""
        return (
            (task.root_id is not None and task.root_id in self.root_ids)
            or (task.group_id is not None and task.group_id in self.group_ids)
            or (task.chord_id is not None and task.chord_id in self.chord_ids)
            or task.id in self.task_ids
        )


class CanvasGathering:
    """A task's canvas, gathered round by round as the connected set over Celery's links.

    Celery does not give a canvas one root: a chord or group applied from
    outside a task makes each header task the root of itself (the callback
    names the first one as root and as parent). So a canvas is not "the root
    and the tasks naming it" but everything connected to the task by any link.
    Starting from the task, each round looks up, for the tasks the previous
    round added (:meth:`next_links`):

    * the tasks sharing their root (``root_id`` equal to theirs; a task naming
      no root is its own),
    * the tasks sharing their ``group_id`` (a group's members, a chord's
      header tasks and its callback),
    * the tasks naming one of them as ``chord_id`` (a callback's header tasks),
    * the tasks they name as ``root_id``, ``parent_id`` or ``chord_id``;

    each key is looked up once. Of what a round finds that is new, the oldest
    by ``(first_seen_at, id)`` are kept, as many as still fit under ``limit``
    (:meth:`add`). Gathering ends when a round adds nothing, when ``limit``
    tasks are gathered (so asking for one more than is drawn still tells a
    canvas that was cut), or after :data:`MAX_ROUNDS` rounds. The task's
    children are found through their root, which Celery gives them, not
    through ``parent_id``.

    A backend runs each round as one query (or a few); the result is the same
    on every backend, since which tasks a round keeps depends only on the tasks.
    """

    def __init__(self, start: Task, limit: int) -> None:
        if limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        self._limit = limit
        self._found: dict[str, Task] = {start.id: start}
        self._frontier: list[Task] = [start]
        self._asked_roots: set[str] = set()
        self._asked_groups: set[str] = set()
        self._asked_ids: set[str] = set()
        self.rounds = 0

    @property
    def found_ids(self) -> frozenset[str]:
        """The ids of the tasks gathered so far (a round's lookup leaves them out)."""
        return frozenset(self._found)

    @property
    def remaining(self) -> int:
        """How many more tasks fit under the limit."""
        return self._limit - len(self._found)

    def next_links(self) -> CanvasLinks | None:
        """The next round's lookups, or ``None`` when the gathering is done."""
        if not self._frontier or self.remaining <= 0 or self.rounds >= MAX_ROUNDS:
            return None
        frontier, self._frontier = self._frontier, []
        roots = {task.root_id or task.id for task in frontier} - self._asked_roots
        groups = {task.group_id for task in frontier if task.group_id is not None}
        groups -= self._asked_groups
        named = {
            linked
            for task in frontier
            for linked in (task.root_id, task.parent_id, task.chord_id)
            if linked is not None and linked not in self._found
        } - self._asked_ids
        self._asked_roots |= roots
        self._asked_groups |= groups
        self._asked_ids |= named
        self.rounds += 1
        return CanvasLinks(
            root_ids=frozenset(roots),
            group_ids=frozenset(groups),
            chord_ids=frozenset(task.id for task in frontier),
            task_ids=frozenset(named),
        )

    def add(self, linked: Iterable[Task]) -> None:
        """Take a round's findings: of the new ones, the oldest that still fit."""
        new = {task.id: task for task in linked if task.id not in self._found}
        kept = sorted(new.values(), key=_age)[: self.remaining]
        self._found.update((task.id, task) for task in kept)
        self._frontier = kept

    def tasks(self) -> list[Task]:
        """The tasks gathered, oldest first by ``(first_seen_at, id)``."""
        return sorted(self._found.values(), key=_age)


def _age(task: Task) -> tuple[datetime, str]:
    return (task.first_seen_at, task.id)


# -- the layout -----------------------------------------------------------------------


def layout_canvas(tasks: Iterable[Task], *, max_nodes: int = MAX_NODES) -> CanvasLayout:
    """Build the canvas graph of ``tasks`` and lay it out: :func:`layout` of :func:`build_graph`."""
    return layout(build_graph(tasks, max_nodes=max_nodes))


def layout(graph: CanvasGraph) -> CanvasLayout:
    """Lay ``graph`` out top-down; see the module's documentation for how.

    Raises :class:`~z4j_domain.errors.InvalidInput` for a graph
    :func:`build_graph` would not make: duplicate node ids, edges to unknown
    nodes, self-loops, duplicate edges or a cycle.
    """
    nodes = graph.nodes
    n = len(nodes)
    rank = {node.id: i for i, node in enumerate(nodes)}
    if len(rank) != n:
        raise InvalidInput("a canvas graph's node ids must be unique")
    predecessors: list[list[int]] = [[] for _ in range(n)]
    successors: list[list[int]] = [[] for _ in range(n)]
    pairs: list[tuple[int, int]] = []
    for edge in graph.edges:
        source, target = rank.get(edge.source), rank.get(edge.target)
        if source is None or target is None or source == target:
            raise InvalidInput(f"bad edge {edge.source!r} -> {edge.target!r}")
        pairs.append((source, target))
        successors[source].append(target)
        predecessors[target].append(source)
    if len(set(pairs)) != len(pairs):
        raise InvalidInput("a canvas graph's edges must be unique")

    layer = _layers(nodes, predecessors, successors)
    grid = _Grid.build(nodes, layer, pairs)
    grid.order()
    xs = grid.place()

    x_of = [round(x) for x in xs]
    half = [_HALF_WIDTH if grid.node[v] >= 0 else 0 for v in range(len(x_of))]
    left = min((x_of[v] - half[v] for v in range(len(x_of))), default=0)
    right = max((x_of[v] + half[v] for v in range(len(x_of))), default=0)

    def point(v: int) -> tuple[int, int]:
        return (x_of[v] - left, NODE_HEIGHT // 2 + grid.layer[v] * LAYER_SPACING)

    placed: list[PlacedNode] = []
    for vertices in grid.layers:
        real = [v for v in vertices if grid.node[v] >= 0]
        for order, v in enumerate(real):
            x, y = point(v)
            placed.append(
                PlacedNode(node=nodes[grid.node[v]], layer=grid.layer[v], order=order, x=x, y=y)
            )
    placed_edges = tuple(
        PlacedEdge(edge=edge, points=tuple(point(v) for v in path))
        for edge, path in zip(graph.edges, grid.paths, strict=True)
    )
    depth = len(grid.layers)
    return CanvasLayout(
        nodes=tuple(placed),
        edges=placed_edges,
        ignored=graph.ignored,
        omitted=graph.omitted,
        layers=depth,
        width=right - left,
        height=(depth - 1) * LAYER_SPACING + NODE_HEIGHT if depth else 0,
    )


def _layers(
    nodes: Sequence[CanvasNode],
    predecessors: Sequence[Sequence[int]],
    successors: Sequence[Sequence[int]],
) -> list[int]:
    """A layer per node, every edge pointing strictly down; numbered from 0, none empty."""
    n = len(nodes)
    waiting = [len(p) for p in predecessors]
    ready = [v for v in range(n) if not waiting[v]]
    heapq.heapify(ready)
    topological: list[int] = []
    while ready:
        v = heapq.heappop(ready)
        topological.append(v)
        for w in successors[v]:
            waiting[w] -= 1
            if not waiting[w]:
                heapq.heappush(ready, w)
    if len(topological) != n:
        raise InvalidInput("a canvas graph must not have a cycle")

    layer = [0] * n
    for v in topological:
        for w in successors[v]:
            layer[w] = max(layer[w], layer[v] + 1)
    # A lone source (a placeholder parent, a task whose parent is unknown) sits
    # just above its highest child rather than at the very top.
    for v in range(n):
        if not predecessors[v] and successors[v] and not nodes[v].group_member:
            layer[v] = min(layer[w] for w in successors[v]) - 1
    # A group's members in one layer, side by side, where their children leave room.
    groups: dict[str, list[int]] = {}
    for v, node in enumerate(nodes):
        if node.group_member and node.group_id is not None:
            groups.setdefault(node.group_id, []).append(v)
    for members in groups.values():
        target = max(layer[v] for v in members)
        for v in members:
            if all(layer[w] > target for w in successors[v]):
                layer[v] = target
    used = {value: i for i, value in enumerate(sorted(set(layer)))}
    return [used[value] for value in layer]


@attrs.define
class _Grid:
    """The layered graph with bend vertices, as the ordering and placement steps see it.

    Vertices ``0 .. n-1`` are the nodes; higher ones are bend points of long
    edges (``node`` is ``-1`` for them). ``up`` and ``down`` link each vertex
    to its neighbours in the layer above and below.
    """

    layer: list[int]
    node: list[int]
    tie: list[tuple[int, int, int]]
    up: list[list[int]]
    down: list[list[int]]
    paths: list[list[int]]
    layers: list[list[int]]

    @classmethod
    def build(
        cls, nodes: Sequence[CanvasNode], layer: Sequence[int], pairs: Sequence[tuple[int, int]]
    ) -> _Grid:
        """Add bend vertices to the long edges that the bend budget allows."""
        n = len(nodes)
        first_member: dict[str, int] = {}
        group_rank = list(range(n))
        for v, node in enumerate(nodes):
            if node.group_member and node.group_id is not None:
                group_rank[v] = first_member.setdefault(node.group_id, v)
        grid = cls(
            layer=list(layer),
            node=list(range(n)),
            tie=[(group_rank[v], v, -1) for v in range(n)],
            up=[[] for _ in range(n)],
            down=[[] for _ in range(n)],
            paths=[[s, t] for s, t in pairs],
            layers=[],
        )
        budget = BENDS_PER_NODE * n
        by_span = sorted(
            range(len(pairs)), key=lambda i: (layer[pairs[i][1]] - layer[pairs[i][0]], i)
        )
        for i in by_span:
            source, target = pairs[i]
            bends = layer[target] - layer[source] - 1
            if bends > budget:
                continue  # drawn straight, and left out of the ordering
            budget -= bends
            path = [source]
            for step in range(1, bends + 1):
                grid.layer.append(layer[source] + step)
                grid.node.append(-1)
                grid.tie.append((group_rank[target], target, source))
                grid.up.append([])
                grid.down.append([])
                path.append(len(grid.layer) - 1)
            path.append(target)
            for upper, lower in itertools.pairwise(path):
                grid.down[upper].append(lower)
                grid.up[lower].append(upper)
            grid.paths[i] = path
        depth = max(layer, default=-1) + 1
        grid.layers = [[] for _ in range(depth)]
        for v, value in enumerate(grid.layer):
            grid.layers[value].append(v)
        return grid

    def order(self) -> None:
        """Order each layer to reduce crossings: the initial pass, then barycenter sweeps."""
        position = [0] * len(self.layer)
        if not self.layers:
            return

        def settle(vertices: list[int]) -> None:
            for i, v in enumerate(vertices):
                position[v] = i

        inf = float("inf")
        self.layers[0].sort(key=lambda v: self.tie[v])
        settle(self.layers[0])
        for vertices in self.layers[1:]:
            vertices.sort(key=lambda v: (_mean(position, self.up[v], inf), self.tie[v]))
            settle(vertices)

        best = [list(vertices) for vertices in self.layers]
        fewest = self.crossings(position)
        for sweep in range(_SWEEPS):
            if fewest == 0:
                break
            downward = sweep % 2 == 1
            indices = (
                range(1, len(self.layers)) if downward else range(len(self.layers) - 2, -1, -1)
            )
            neighbours = self.up if downward else self.down
            for i in indices:
                self._sort(self.layers[i], neighbours, position)
            crossings = self.crossings(position)
            if crossings < fewest:
                fewest = crossings
                best = [list(vertices) for vertices in self.layers]
        self.layers = best

    @staticmethod
    def _sort(
        vertices: list[int], neighbours: Sequence[Sequence[int]], position: list[int]
    ) -> None:
        """Sort one layer by the mean position of each vertex's neighbours (ties: as they were)."""
        vertices.sort(key=lambda v: (_mean(position, neighbours[v], position[v]), position[v]))
        for i, v in enumerate(vertices):
            position[v] = i

    def crossings(self, position: Sequence[int]) -> int:
        """How many pairs of segments between adjacent layers cross."""
        total = 0
        for vertices in self.layers[:-1]:
            segments = sorted((position[v], position[w]) for v in vertices for w in self.down[v])
            total += _inversions([lower for _, lower in segments])
        return total

    def place(self) -> list[float]:
        """The x of every vertex: ordered, spaced, and pulled towards its neighbours."""
        x = [0.0] * len(self.layer)
        for vertices in self.layers:
            offsets = self._offsets(vertices)
            middle = offsets[-1] / 2 if offsets else 0.0
            for v, offset in zip(vertices, offsets, strict=True):
                x[v] = offset - middle
        count = len(self.layers)
        for _ in range(_PLACEMENT_ROUNDS):
            for i in range(1, count):
                self._pull(self.layers[i], self.up, x)
            for i in range(count - 2, -1, -1):
                self._pull(self.layers[i], self.down, x)
        return x

    def _offsets(self, vertices: Sequence[int]) -> list[float]:
        """Each vertex's least distance from the layer's first one, keeping the spacing."""
        offsets: list[float] = []
        total = 0.0
        for i, v in enumerate(vertices):
            if i:
                total += self._half(vertices[i - 1]) + self._half(v) + NODE_GAP
            offsets.append(total)
        return offsets

    def _half(self, v: int) -> float:
        return _HALF_WIDTH if self.node[v] >= 0 else 0.0

    def _pull(
        self, vertices: Sequence[int], neighbours: Sequence[Sequence[int]], x: list[float]
    ) -> None:
        """Move a layer as close to the mean of each vertex's neighbours as spacing allows.

        Least squares under ``x[i+1] - x[i] >= gap[i]``: with ``y[i] = x[i] -
        offset[i]`` the constraint is ``y`` non-decreasing, which pool adjacent
        violators solves exactly.
        """
        offsets = self._offsets(vertices)
        targets = [
            _mean(x, neighbours[v], x[v]) - o for v, o in zip(vertices, offsets, strict=True)
        ]
        blocks: list[list[float]] = []  # [sum, count]
        for target in targets:
            blocks.append([target, 1.0])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                total, count = blocks.pop()
                blocks[-1][0] += total
                blocks[-1][1] += count
        i = 0
        for total, count in blocks:
            value = total / count
            for _ in range(int(count)):
                x[vertices[i]] = value + offsets[i]
                i += 1


def _mean(values: Sequence[float], vertices: Sequence[int], default: float) -> float:
    """The mean of ``values`` at ``vertices``, or ``default`` when there are none."""
    if not vertices:
        return default
    return sum(values[v] for v in vertices) / len(vertices)


def _inversions(values: Sequence[int]) -> int:
    """How many pairs ``i < j`` have ``values[i] > values[j]`` (a Fenwick tree)."""
    size = max(values, default=-1) + 1
    tree = [0] * (size + 1)
    inversions = 0
    for seen, value in enumerate(values):
        # Count the earlier values that are <= value, then add this one.
        i, not_greater = value + 1, 0
        while i > 0:
            not_greater += tree[i]
            i -= i & -i
        inversions += seen - not_greater
        i = value + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return inversions
