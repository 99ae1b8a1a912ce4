"""The canvas layout: a task's chain, group or chord as a tidy top-down graph."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import (
    BASE_TIME,
    CanvasCase,
    celery_canvases,
    tangled_canvases,
    tree_canvas_specs,
)
from z4j_domain.canvas import (
    LAYER_SPACING,
    MAX_NODES,
    NODE_GAP,
    NODE_HEIGHT,
    NODE_WIDTH,
    CanvasEdge,
    CanvasGraph,
    CanvasLayout,
    CanvasNode,
    EdgeKind,
    PlacedNode,
    build_graph,
    layout,
    layout_canvas,
)
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import EventKind, Task, TaskEvent, TaskState, merge

_seconds = itertools.count()


def task(
    task_id: str,
    parent: str | None = None,
    *,
    group: str | None = None,
    chord: str | None = None,
    kind: EventKind = EventKind.SUCCEEDED,
    runtime: float | None = 1.5,
    second: int | None = None,
) -> Task:
    """A task of the canvas rooted at ``a``, first seen one second after the previous one."""
    event = TaskEvent(
        id=f"{task_id}:{kind}",
        task_id=task_id,
        kind=kind,
        timestamp=BASE_TIME + timedelta(seconds=next(_seconds) if second is None else second),
        name=f"app.{task_id}",
        runtime=runtime,
        root_id="a",
        parent_id=parent,
        group_id=group,
        chord_id=chord,
    )
    return Task.from_event(event)


def by_id(result: CanvasLayout) -> dict[str, PlacedNode]:
    """The placed nodes by task id."""
    return {placed.node.id: placed for placed in result.nodes}


def edge_set(result: CanvasLayout) -> set[tuple[str, str, str]]:
    """The edges as (source, target, kind)."""
    return {(e.edge.source, e.edge.target, e.edge.kind.value) for e in result.edges}


def check_well_formed(result: CanvasLayout) -> None:
    """What every layout must be: edges downwards, boxes apart, everything inside the box."""
    nodes = by_id(result)
    assert len(nodes) == len(result.nodes), "node ids are unique"
    assert len({(p.x, p.y) for p in result.nodes}) == len(result.nodes), "no shared position"
    assert [(p.layer, p.order) for p in result.nodes] == sorted(
        (p.layer, p.order) for p in result.nodes
    )
    assert {p.layer for p in result.nodes} == set(range(result.layers)), "no empty layer"
    for layer, placed in itertools.groupby(result.nodes, key=lambda p: p.layer):
        row = list(placed)
        assert [p.order for p in row] == list(range(len(row)))
        for left, right in itertools.pairwise(row):
            # Centres are rounded to whole units, so one unit of slack.
            assert right.x - left.x >= NODE_WIDTH + NODE_GAP - 1, (layer, left, right)
    for p in result.nodes:
        assert p.y == NODE_HEIGHT // 2 + p.layer * LAYER_SPACING
        assert NODE_WIDTH // 2 <= p.x <= result.width - NODE_WIDTH // 2
        assert p.y + NODE_HEIGHT // 2 <= result.height
    for placed in result.edges:
        source, target = nodes[placed.edge.source], nodes[placed.edge.target]
        assert source.layer < target.layer, placed.edge
        assert placed.points[0] == (source.x, source.y)
        assert placed.points[-1] == (target.x, target.y)
        ys = [y for _, y in placed.points]
        assert ys == sorted(set(ys)), "an edge only ever goes down"
        assert all(0 <= x <= result.width for x, _ in placed.points)
    assert len(edge_set(result)) == len(result.edges)
    assert result.truncated == (result.omitted > 0)


def check_chords(result: CanvasLayout, chords: dict[str, list[str]]) -> None:
    """Each stored header has a chord edge to its callback, which sits below it."""
    nodes = by_id(result)
    edges = edge_set(result)
    for callback, headers in chords.items():
        stored = [h for h in headers if h in nodes and not nodes[h].node.missing]
        if not stored:
            continue
        node = nodes[callback].node
        assert node.chord_callback
        # Celery stamps a callback with its header's group: that does not make it a member.
        if node.group_id in {nodes[h].node.group_id for h in stored}:
            assert not node.group_member
        for header in stored:
            assert (header, callback, "chord") in edges
            assert (header, callback, "parent") not in edges
            assert nodes[header].layer < nodes[callback].layer


def crossings(result: CanvasLayout) -> int:
    """How many pairs of drawn segments cross, counted from the coordinates alone."""
    segments: dict[int, list[tuple[int, int]]] = {}
    for placed in result.edges:
        for (x1, y1), (x2, y2) in itertools.pairwise(placed.points):
            assert y2 - y1 == LAYER_SPACING, "small canvases route every long edge"
            segments.setdefault(y1, []).append((x1, x2))
    return sum(
        1
        for row in segments.values()
        for (a1, a2), (b1, b2) in itertools.combinations(row, 2)
        if (a1 - b1) * (a2 - b2) < 0
    )


def node_count(tasks: Sequence[Task]) -> int:
    """How many nodes the canvas has without a cap."""
    return len(build_graph(tasks, max_nodes=10**9).nodes)


# -- properties -----------------------------------------------------------------------


@given(case=celery_canvases())
def test_a_celery_canvas_is_laid_out_downwards_with_every_chord_fanning_in(
    case: CanvasCase,
) -> None:
    """Edges go down, boxes never overlap, every callback is below and linked from each header."""
    result = layout_canvas(case.tasks)
    check_well_formed(result)
    check_chords(result, case.chords)
    assert result.ignored == ()
    assert not result.truncated
    stored = {t.id for t in case.tasks}
    assert {p.node.id for p in result.nodes if not p.node.missing} == stored
    assert {p.node.id for p in result.nodes if p.node.missing} <= case.missing


@given(case=celery_canvases(specs=tree_canvas_specs))
def test_chains_and_groups_are_drawn_without_crossings(case: CanvasCase) -> None:
    """A canvas without chords is a tree: the order within layers leaves no crossing."""
    result = layout_canvas(case.tasks)
    check_well_formed(result)
    assert crossings(result) == 0


@given(case=celery_canvases(), data=st.data())
def test_the_layout_does_not_depend_on_the_input_order(case: CanvasCase, data: Any) -> None:
    """Any permutation of the same tasks gives the same layout."""
    shuffled = data.draw(st.permutations(case.tasks))
    assert layout_canvas(shuffled) == layout_canvas(case.tasks)


@given(tasks=tangled_canvases(), data=st.data())
def test_arbitrary_links_never_break_the_layout(tasks: list[Task], data: Any) -> None:
    """Cycles, self-links, unknown ids and duplicates: a well-formed layout, whatever the order."""
    result = layout_canvas(tasks)
    check_well_formed(result)
    assert layout_canvas(data.draw(st.permutations(tasks))) == result
    # Every link is drawn, or ignored to break a cycle, unless it is a self-link
    # or a callback's parent link folded into its chord edge.
    joined: dict[str, Task] = {}
    for t in tasks:
        joined[t.id] = merge(joined[t.id], t) if t.id in joined else t
    links = {
        (source, target)
        for t in joined.values()
        for source, target in ((t.parent_id, t.id), (t.id, t.chord_id))
        if source is not None and target is not None and source != target
    }
    drawn = {(e.edge.source, e.edge.target) for e in result.edges}
    ignored = {(e.source, e.target) for e in result.ignored}
    assert drawn | ignored == links
    assert not drawn & ignored


@given(case=celery_canvases(), max_nodes=st.integers(min_value=1, max_value=12))
def test_the_cap_keeps_the_oldest_tasks_and_says_it_cut(case: CanvasCase, max_nodes: int) -> None:
    """At most max_nodes nodes; truncated exactly when the canvas has more; the oldest kept."""
    result = layout_canvas(case.tasks, max_nodes=max_nodes)
    check_well_formed(result)
    total = node_count(case.tasks)
    assert len(result.nodes) == min(max_nodes, total)
    assert result.truncated == (total > max_nodes)
    kept = {p.node.id for p in result.nodes if not p.node.missing}
    oldest = sorted(case.tasks, key=lambda t: (t.first_seen_at, t.id))[: len(kept)]
    assert kept == {t.id for t in oldest}


# -- examples -------------------------------------------------------------------------


def test_a_chain_is_a_vertical_line() -> None:
    """a | b | c: one task per layer, straight down, parent edges."""
    result = layout_canvas([task("c", "b"), task("a"), task("b", "a")])
    nodes = by_id(result)
    assert [(nodes[i].layer, nodes[i].x) for i in "abc"] == [(0, 80), (1, 80), (2, 80)]
    assert edge_set(result) == {("a", "b", "parent"), ("b", "c", "parent")}
    assert (result.layers, result.width, result.height) == (3, NODE_WIDTH, 248)
    assert not any(p.node.group_member or p.node.chord_callback for p in result.nodes)


def test_a_group_sits_side_by_side_under_its_parent() -> None:
    """a publishes group(b, c, d): one layer, in the order they were sent, a centred above."""
    result = layout_canvas(
        [task("a"), task("b", "a", group="G"), task("c", "a", group="G"), task("d", "a", group="G")]
    )
    nodes = by_id(result)
    assert [(nodes[i].layer, nodes[i].order) for i in "bcd"] == [(1, 0), (1, 1), (1, 2)]
    assert all(nodes[i].node.group_member for i in "bcd")
    assert nodes["a"].x == nodes["c"].x
    assert nodes["c"].x - nodes["b"].x == NODE_WIDTH + NODE_GAP


def test_a_chord_fans_in_from_each_header_task() -> None:
    """chord([b, c, d], e): three chord edges, the callback's parent link drawn once, below all."""
    tasks = [
        task("a"),
        task("b", "a", group="G", chord="e"),
        task("c", "a", group="G", chord="e"),
        task("d", "a", group="G", chord="e"),
        # Celery stamps the callback with the header's group and the last header as parent.
        task("e", "c", group="G"),
    ]
    result = layout_canvas(tasks)
    check_well_formed(result)
    nodes = by_id(result)
    assert edge_set(result) == {
        ("a", "b", "parent"),
        ("a", "c", "parent"),
        ("a", "d", "parent"),
        ("b", "e", "chord"),
        ("c", "e", "chord"),
        ("d", "e", "chord"),
    }
    assert nodes["e"].node.chord_callback
    assert not nodes["e"].node.group_member
    assert [nodes[i].layer for i in "abcde"] == [0, 1, 1, 1, 2]
    assert nodes["e"].x == nodes["c"].x == nodes["a"].x


def test_a_chain_with_a_chord_in_it() -> None:
    """a | chord([b, chain(c, d)], e) | f: the short header's edge bends past the long one."""
    tasks = [
        task("a"),
        task("b", "a", group="G", chord="e"),
        task("c", "a", group="G"),
        task("d", "c", chord="e"),
        task("e", "d", group="G"),
        task("f", "e"),
    ]
    result = layout_canvas(tasks)
    check_well_formed(result)
    nodes = by_id(result)
    assert [nodes[i].layer for i in "abcdef"] == [0, 1, 1, 2, 3, 4]
    bent = next(e for e in result.edges if (e.edge.source, e.edge.target) == ("b", "e"))
    assert [y for _, y in bent.points] == [124, 224, 324]
    assert crossings(result) == 0


def test_a_callback_not_sent_yet_is_a_placeholder() -> None:
    """Headers still running: the callback they name is drawn as missing, with its fan-in."""
    result = layout_canvas(
        [task("a"), *(task(h, "a", group="G", chord="cb", kind=EventKind.STARTED) for h in "bcd")]
    )
    nodes = by_id(result)
    callback = nodes["cb"].node
    assert callback == CanvasNode(id="cb", missing=True, chord_callback=True)
    assert {(s, t) for s, t, k in edge_set(result) if k == "chord"} == {
        ("b", "cb"),
        ("c", "cb"),
        ("d", "cb"),
    }
    assert nodes["cb"].layer == 2


def test_an_unknown_parent_is_a_placeholder_just_above_its_child() -> None:
    """A parent the brain never stored is shown, one layer above the task it published."""
    result = layout_canvas([task("a"), task("b", "a"), task("c", "b"), task("x", "elsewhere")])
    nodes = by_id(result)
    assert nodes["elsewhere"].node.missing
    assert (nodes["elsewhere"].layer, nodes["x"].layer) == (0, 1)


def test_a_group_of_chains_starts_in_one_layer() -> None:
    """Members of one group at different depths (bad or partial data) still share a layer."""
    result = layout_canvas(
        [task("a"), task("a1", "a"), task("m1", "a1", group="G"), task("m2", None, group="G")]
    )
    nodes = by_id(result)
    assert nodes["m1"].layer == nodes["m2"].layer == 2


def test_cycles_and_self_links_are_broken_deterministically() -> None:
    """a <-> b: the link from the later task to the earlier one is ignored; self-links dropped."""
    result = layout_canvas([task("a", "b"), task("b", "a", chord="b"), task("c", "c")])
    check_well_formed(result)
    assert edge_set(result) == {("a", "b", "parent")}
    assert [(e.source, e.target) for e in result.ignored] == [("b", "a")]
    assert by_id(result)["b"].layer == 1


def test_a_chord_edge_wins_over_a_parent_edge_in_a_cycle() -> None:
    """Bad data where a header's parent is its own callback: the fan-in is what is kept."""
    result = layout_canvas([task("b", "e", chord="e"), task("e", "c")])
    assert ("b", "e", "chord") in edge_set(result)
    assert [(e.source, e.target, e.kind) for e in result.ignored] == [("e", "b", EdgeKind.PARENT)]


def test_duplicates_of_a_task_are_joined() -> None:
    """The same task twice (two events' views) is one node, in its latest state."""
    started = task("b", "a", kind=EventKind.STARTED, second=5)
    done = task("b", "a", kind=EventKind.SUCCEEDED, second=6)
    result = layout_canvas([task("a", second=0), done, started])
    assert [p.node.id for p in result.nodes] == ["a", "b"]
    assert by_id(result)["b"].node.state is TaskState.SUCCEEDED


def test_the_cap_cuts_a_long_chain_and_says_so() -> None:
    """A chain longer than the cap: the first MAX_NODES steps, and how many were left out."""
    steps = [task("s0", second=0)]
    steps += [task(f"s{i}", f"s{i - 1}", second=i) for i in range(1, MAX_NODES + 25)]
    result = layout_canvas(steps)
    assert len(result.nodes) == MAX_NODES
    assert (result.truncated, result.omitted, result.layers) == (True, 25, MAX_NODES)
    assert result.nodes[-1].node.id == f"s{MAX_NODES - 1}"


def test_an_empty_canvas() -> None:
    """No tasks: no nodes, an empty box."""
    result = layout_canvas([])
    assert (result.nodes, result.edges, result.layers, result.width, result.height) == (
        (),
        (),
        0,
        0,
        0,
    )


def test_to_dict_is_json() -> None:
    """The API's form: nodes with state and place, edges with kind and points, the flags."""
    result = layout_canvas([task("a", runtime=0.25), task("b", "a", chord="c")], max_nodes=2)
    body = json.loads(json.dumps(result.to_dict()))
    assert body["nodes"][0] == {
        "id": "a",
        "name": "app.a",
        "state": "succeeded",
        "runtime": 0.25,
        "first_seen_at": body["nodes"][0]["first_seen_at"],
        "group_id": None,
        "missing": False,
        "chord_callback": False,
        "group_member": False,
        "layer": 0,
        "order": 0,
        "x": 80,
        "y": 24,
    }
    assert body["edges"] == [
        {"source": "a", "target": "b", "kind": "parent", "points": [[80, 24], [80, 124]]}
    ]
    assert (body["truncated"], body["ignored_edges"]) == (True, [])
    assert (body["node_width"], body["node_height"]) == (NODE_WIDTH, NODE_HEIGHT)
    assert (body["layers"], body["width"], body["height"]) == (2, 160, 148)


def test_bad_arguments_are_refused() -> None:
    """A cap below one, or a hand-made graph with a cycle or a dangling edge, is InvalidInput."""
    with pytest.raises(InvalidInput):
        build_graph([], max_nodes=0)
    a, b = CanvasNode(id="a"), CanvasNode(id="b")
    for edges in (
        (
            CanvasEdge(source="a", target="b", kind=EdgeKind.PARENT),
            CanvasEdge(source="b", target="a", kind=EdgeKind.PARENT),
        ),
        (CanvasEdge(source="a", target="z", kind=EdgeKind.PARENT),),
        (CanvasEdge(source="a", target="a", kind=EdgeKind.CHORD),),
    ):
        with pytest.raises(InvalidInput):
            layout(CanvasGraph(nodes=(a, b), edges=edges))
    with pytest.raises(InvalidInput):
        layout(CanvasGraph(nodes=(a, a), edges=()))
