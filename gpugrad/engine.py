"""The tape: graph nodes, grad mode, and the reverse walk that applies the chain rule.

A tensor computed by a differentiable op from inputs that require grad carries a
``Node``: the op, the arrays its VJP rule needs, the op's parameters, and one
parent per input (the input's own Node, the input tensor itself when it is a
leaf, or None when no gradient flows there). ``backward`` walks these nodes in
reverse topological order without recursion. This module never names numpy or
cupy: array modules come from the backend, op rules from the registry.
"""

from __future__ import annotations

import functools
import heapq
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import versions
from .backend import device_scope, namespace

if TYPE_CHECKING:
    from .ops.registry import OpDef
    from .tensor import Tensor


# ----------------------------------------------------------------------------- grad mode

class _GradMode(threading.local):
    enabled = True
    anomaly = False


grad_mode = _GradMode()
anomaly_threads = 0      # how many threads are inside detect_anomaly (0: no op pays for it)


def is_grad_enabled() -> bool:
    return grad_mode.enabled


class _GradModeBlock:
    """A block (``with``) or a decorated function that runs with recording on or off.

    The same object may be entered again, nested or not, and used as a decorator with or
    without parentheses (``@gg.no_grad`` and ``@gg.no_grad()``).
    """

    mode = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], bool):
            return cls()(args[0])           # a bare decorator: @gg.no_grad
        return super().__new__(cls)

    def __init__(self) -> None:
        self.prev: list[bool] = []

    def __enter__(self) -> None:
        self.prev.append(grad_mode.enabled)
        grad_mode.enabled = self.mode

    def __exit__(self, *exc: object) -> None:
        grad_mode.enabled = self.prev.pop()

    def __call__(self, fn: Callable) -> Callable:
        block = type(self)
        args = self._args()

        @functools.wraps(fn)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with block(*args):              # a fresh block per call: threads and recursion are safe
                return fn(*a, **kw)

        return wrapper

    def _args(self) -> tuple:
        return ()


class no_grad(_GradModeBlock):
    """Ops run inside ``with gg.no_grad():`` record nothing and need no memory for backward."""

    mode = False


class enable_grad(_GradModeBlock):
    """Turn recording back on inside a ``no_grad`` block."""

    mode = True


class inference_mode(_GradModeBlock):
    """``no_grad`` for inference, as ``torch.inference_mode``: ``with gg.inference_mode():`` or a decorator.

    ``inference_mode(False)`` leaves recording as it is. (gpugrad's tensors carry no inference flag:
    a tensor made here is a constant, and may be used in a recorded computation later.)
    """

    def __init__(self, mode: bool = True) -> None:
        super().__init__()
        self.on = bool(mode)

    def __enter__(self) -> None:
        self.prev.append(grad_mode.enabled)
        grad_mode.enabled = grad_mode.enabled and not self.on

    def _args(self) -> tuple:
        return (self.on,)


class set_grad_enabled(_GradModeBlock):
    """Turn recording on or off, as ``torch.set_grad_enabled``: called as a function it sets the mode
    (``gg.set_grad_enabled(False)``); as a ``with`` block or a decorator it restores it after.
    """

    def __new__(cls, mode: bool) -> set_grad_enabled:
        return object.__new__(cls)

    def __init__(self, mode: bool) -> None:
        if not isinstance(mode, (bool, int)):
            raise TypeError(f"set_grad_enabled: mode must be a bool, got {type(mode).__name__}")
        super().__init__()
        self.mode = bool(mode)
        self.prev.append(grad_mode.enabled)     # restored by __exit__, or at once by __call__
        grad_mode.enabled = self.mode

    def __enter__(self) -> None:
        if not self.prev:                       # entered again after an earlier exit
            super().__enter__()

    def __call__(self, fn: Callable) -> Callable:
        if self.prev:
            grad_mode.enabled = self.prev.pop()     # a decorator changes nothing until fn runs
        return super().__call__(fn)

    def _args(self) -> tuple:
        return (self.mode,)


class detect_anomaly:
    """Check every op's output and every backward gradient for NaN/Inf, in this thread.

    The error names the op, the tensor's shape and the source line that created the
    op. Costs nothing while no thread uses it; while on, each op checks its result.
    """

    def __init__(self, check_nan: bool = True) -> None:
        self.check_nan = check_nan
        self.prev: list[bool] = []

    def __enter__(self) -> None:
        global anomaly_threads
        self.prev.append(grad_mode.anomaly)
        if self.check_nan and not grad_mode.anomaly:
            anomaly_threads += 1
        grad_mode.anomaly = grad_mode.anomaly or self.check_nan

    def __exit__(self, *exc: object) -> None:
        global anomaly_threads
        was = self.prev.pop()
        if grad_mode.anomaly and not was:
            anomaly_threads -= 1
        grad_mode.anomaly = was


def is_anomaly_enabled() -> bool:
    return grad_mode.anomaly


def check_finite(what: str, array: Any, where: str | tuple | None) -> None:
    """detect_anomaly's test: raise if a float array holds NaN or Inf."""
    data = array
    if getattr(data, "dtype", None) is None or data.dtype.kind not in "fc":
        return
    xp = namespace(data)
    if not bool(xp.isfinite(data).all()):
        kind = "NaN" if bool(xp.isnan(data).any()) else "Inf"
        raise RuntimeError(f"detect_anomaly: {what} of shape {tuple(data.shape)} contains {kind}"
                           + (f"; the op was created at {_site(where)}" if where else ""))


def _site(where: str | tuple) -> str:
    return where if isinstance(where, str) else versions.describe(where)


# ----------------------------------------------------------------------------- nodes

_RELEASED = object()   # marks a node whose saved arrays were freed by a backward pass


class Node(list):
    """One recorded op application: the op, what its VJP needs, and where gradients go.

    A node is the list of its parents, one per input: the input's node, the leaf tensor
    itself, or None where no gradient flows. Holding them in the node itself rather than in
    a tuple beside it halves the objects the garbage collector tracks per recorded op, and
    its full passes over a large graph with them. Nodes compare and hash by identity.
    """

    __slots__ = ("op", "out", "inputs", "params", "dtype", "hooks", "seq", "where", "__weakref__")
    __hash__ = object.__hash__
    __eq__ = object.__eq__
    __ne__ = object.__ne__

    def __init__(self, op: OpDef, out: Any, inputs: tuple, params: dict,
                 parents: Sequence[Any], dtype: Any) -> None:
        super().__init__(parents)
        self.op = op
        self.out = out          # the output array if the rule needs it, else None
        self.inputs = inputs    # one entry per input: the array if the rule needs it, else None
        self.params = params
        self.dtype = dtype      # gradients arriving here are cast to this dtype
        self.hooks: list[Callable] | None = None   # Tensor.register_hook on the output
        self.seq = versions.clock()                    # creation order (consumers come later), and
                                                       # when it saved its arrays (gpugrad.versions)
        # self.where, the creating source site, is set only under detect_anomaly (see site_of)

    @property
    def parents(self) -> Node:
        """The node's parents (the node itself: see the class docstring)."""
        return self

    def __repr__(self) -> str:
        return f"<{self.op.name}Backward>"

    @property
    def name(self) -> str:
        return f"{self.op.name}Backward"


def site_of(node: Node) -> tuple | None:
    """Where ``node`` was created, if it was recorded under detect_anomaly (else None)."""
    return getattr(node, "where", None)


# ----------------------------------------------------------------------------- the reverse walk

def _nodes_leading_to(start: Sequence[Node], targets: set[int]) -> set[Node]:
    """The nodes reachable from ``start`` from which some target (a node or leaf, by id) can be reached."""
    reachable = set(start)
    stack = list(start)
    while stack:
        for parent in stack.pop():
            if type(parent) is Node and parent not in reachable:
                reachable.add(parent)
                stack.append(parent)
    needed: set[Node] = set()
    for node in sorted(reachable, key=_by_seq):     # creation order: parents are decided first
        if id(node) in targets or any(
                (p in needed) if type(p) is Node else (p is not None and id(p) in targets)
                for p in node.parents):
            needed.add(node)
    return needed


def _by_seq(node: Node) -> int:
    return node.seq


def run_backward(
    roots: Sequence[Tensor],
    root_grads: Sequence[Any],
    *,
    retain_graph: bool = False,
    capture: Sequence[Tensor] | None = None,
    create_graph: bool = False,
    tensors: bool = False,
) -> list[Any] | None:
    """Propagate ``root_grads`` from ``roots`` back through the tape.

    First-order (the default), gradients are arrays and rules run on arrays. With
    ``create_graph`` they are Tensors and every rule runs on Tensors through
    gpugrad's own namespace, so the backward pass is itself recorded and can be
    differentiated again (``root_grads`` must then be Tensors). With ``tensors`` the gradients
    are Tensors too, but nothing is recorded: inside ``gg.vmap`` they may be batched, and every
    rule's ops then run batched.

    With ``capture=None`` gradients accumulate into the ``.grad`` of leaf tensors.
    Otherwise nothing is accumulated and the gradient arriving at each tensor of
    ``capture`` is returned (None where none arrives), as ``gg.grad`` needs; only
    the nodes on a path to those tensors run, so other graphs (of tensors that the
    differentiated function closed over) are neither computed nor freed.
    """
    _callbacks.stack.append([])
    try:
        if create_graph:
            with enable_grad():
                result = _walk(roots, root_grads, retain_graph, capture, True)
        elif tensors:
            with no_grad():
                result = _walk(roots, root_grads, retain_graph, capture, True)
        else:
            result = _walk(roots, root_grads, retain_graph, capture, False)
        queued = _callbacks.stack[-1]
        for fn in queued:               # the loop also reaches callbacks that callbacks queue
            fn()
    finally:
        _callbacks.stack.pop()
    return result


def _walk(roots: Sequence[Tensor], root_grads: Sequence[Any], retain_graph: bool,
          capture: Sequence[Tensor] | None, graph: bool) -> list[Any] | None:
    """Propagate the gradients through the graph, then hand them to the leaves (or to the caller)."""
    grads, wanted = _propagate(roots, root_grads, retain_graph, capture, graph)
    return _deliver(grads, wanted, capture, graph)


def _propagate(roots: Sequence[Tensor], root_grads: Sequence[Any], retain_graph: bool,
               capture: Sequence[Tensor] | None, graph: bool) -> tuple[dict, dict | None]:
    """The reverse walk: always run the latest-created node that has a gradient waiting.

    A node is created after all its inputs, so when it runs every consumer that can still
    send it a gradient (all of them later-created) has run: its gradient is complete. A
    heap ordered by creation (PyTorch's engine orders by sequence number too) needs no
    counting pass, and nodes that no gradient reaches are never visited. Along a chain
    the next node is always the newest, so it runs directly, without touching the heap.

    Returns the gradients left for the leaves (keyed by leaf; also those of nodes that
    capture did not need) and, with ``capture``, the gradients that reached captured nodes.
    """
    grads: dict[Any, Any] = {}      # node or leaf -> the gradient summed so far
    heap: list[tuple[int, Node]] = []   # (-seq, node): the newest node first
    for root, g in zip(roots, root_grads):
        target = root._node if root._node is not None else root
        if target in grads:
            grads[target] = grads[target] + g
        else:
            grads[target] = g
            if type(target) is Node:
                heap.append((-target.seq, target))

    wanted: dict[int, Any] | None = None
    needed: set[Node] | None = None
    if capture is not None:
        wanted = {id(t._node if t._node is not None else t): None for t in capture}
        needed = _nodes_leading_to([n for _, n in heap], set(wanted))
        heap = [entry for entry in heap if entry[1] in needed]
    heapq.heapify(heap)
    # leaves with post-accumulate hooks, by their oldest consumer (the last to run): see _ready_leaves
    ready = _ready_leaves([n for _, n in heap]) if _post_accumulate and capture is None else []

    node: Node | None = None
    g: Any = None
    while True:
        if node is None:
            if not heap:
                break
            node = heapq.heappop(heap)[1]
            g = grads.pop(node)
        if ready and ready[-1][0] > node.seq:      # every consumer of these leaves has run
            _finish_ready_leaves(ready, node.seq, grads, graph)
        if node.hooks:
            g = _run_hooks(node.hooks, g, graph)
        if wanted is not None and id(node) in wanted:
            wanted[id(node)] = g
        if node.inputs is _RELEASED:
            raise RuntimeError(
                f"backward through {node.name} a second time: its saved arrays were freed by "
                "the first backward. Pass retain_graph=True to the first backward() if you "
                "need to backpropagate through the same graph again.")
        if versions.last_change > node.seq:         # something changed in place since
            versions.check(node)
        in_grads = node.op.run_vjp_graph(g, node) if graph else node.op.run_vjp(g, node)
        if anomaly_threads and grad_mode.anomaly:
            for k, gi in enumerate(in_grads):
                if gi is not None:
                    check_finite(f"the gradient {node.name} computed for input {k}",
                                 gi.data if graph else gi, site_of(node))
        if not retain_graph:
            node.out = None
            node.inputs = _RELEASED

        newest = newest_g = None    # the newest parent that got its first gradient here, and that gradient
        with device_scope(g):       # sums of gradients stay on their GPU (a no-op with one GPU)
            for parent, gi in zip(node, in_grads):
                if parent is None or gi is None:
                    continue
                dtype = parent.dtype if type(parent) is Node else parent.data.dtype
                if gi.dtype is not dtype and gi.dtype != dtype:     # identity first: cheap
                    gi = gi.astype(dtype)
                if parent is newest:
                    newest_g = newest_g + gi
                elif parent in grads:
                    grads[parent] = grads[parent] + gi
                elif type(parent) is not Node or (needed is not None and parent not in needed):
                    grads[parent] = gi                          # a leaf (or a node capture skips)
                elif newest is None:
                    newest, newest_g = parent, gi
                elif parent.seq > newest.seq:
                    grads[newest] = newest_g
                    heapq.heappush(heap, (-newest.seq, newest))
                    newest, newest_g = parent, gi
                else:
                    grads[parent] = gi
                    heapq.heappush(heap, (-parent.seq, parent))
        if newest is not None and heap and -heap[0][0] > newest.seq:    # a newer node is waiting
            grads[newest] = newest_g
            heapq.heappush(heap, (-newest.seq, newest))
            newest = None
        node, g = newest, newest_g
    return grads, wanted


def _deliver(grads: dict, wanted: dict | None, capture: Sequence[Tensor] | None,
             graph: bool) -> list[Any] | None:
    """Run the leaves' hooks, then return the captured gradients or accumulate into ``.grad``."""
    from .tensor import Tensor  # noqa: PLC0415 - the engine sits below tensor

    for leaf, g in list(grads.items()):
        if type(leaf) is not Node and leaf._hooks:
            grads[leaf] = _run_hooks(leaf._hooks, g, graph)
    if wanted is not None:
        for key, g in grads.items():
            if type(key) is not Node and id(key) in wanted:
                wanted[id(key)] = g
        found = [wanted[id(t._node if t._node is not None else t)] for t in capture]
        return found if graph else [None if g is None else namespace(g).asarray(g) for g in found]
    hooked = []
    with _accumulating:         # one lock per backward: threads sharing a leaf lose no gradient
        while grads:
            leaf, g = grads.popitem()
            if type(leaf) is not Node:
                unshared = sys.getrefcount(g) <= _SOLE_LOCAL_REFCOUNT    # `g` is the only reference
                _accumulate(leaf, g, Tensor, graph, unshared)
                if _post_accumulate and id(leaf) in _post_accumulate:
                    hooked.append(leaf)
    for leaf in hooked:         # outside the lock: a hook may itself run a backward
        _run_post_accumulate_hooks(leaf)
    return None


# Accumulating reads .grad, adds and stores it back, and NumPy releases the GIL inside the add of a
# large array: without the lock, two threads' backward passes into one leaf can each add to the old
# value and one sum is lost (as PyTorch, which locks each accumulation).
_accumulating = threading.Lock()


def _run_hooks(hooks: list[Callable], g: Any, graph: bool) -> Any:
    """Call each hook with the gradient as a Tensor; a hook may return a replacement.

    retain_grad's hook runs last, so ``.grad`` shows the gradient after the user's hooks.
    """
    from .tensor import Tensor  # noqa: PLC0415

    ordered = [h for h in hooks if not getattr(h, "retains_grad", False)]
    ordered += [h for h in hooks if getattr(h, "retains_grad", False)]
    for hook in ordered:
        t = g if graph else Tensor._wrap(g)
        replaced = hook(t)
        if replaced is not None:
            _check_replacement(hook, t, replaced)
            g = replaced if graph else replaced.data
    return g


def _check_replacement(hook: Callable, g: Tensor, replaced: Any) -> None:
    """A hook may change a gradient's values, never its type, shape, dtype or device (as PyTorch)."""
    from .tensor import Tensor  # noqa: PLC0415

    name = getattr(hook, "__qualname__", None) or repr(hook)
    if not isinstance(replaced, Tensor):
        raise RuntimeError(f"hook {name!r} must return None or a Tensor, got {type(replaced).__name__}")
    for what, was, got in (("shape", g.shape, replaced.shape), ("dtype", g.dtype, replaced.dtype),
                           ("device", g.device, replaced.device)):
        if was != got:
            raise RuntimeError(
                f"hook {name!r} changed the gradient's {what}: it was {g.shape} {g.dtype} on {g.device}, "
                f"the hook returned {replaced.shape} {replaced.dtype} on {replaced.device}; a hook may "
                f"change a gradient's values only (return a Tensor like the one it was given)")


def _sole_local_refcount() -> int:
    """What ``sys.getrefcount`` reads for an object held by one local variable and nothing else."""
    held = object()
    return sys.getrefcount(held)


_SOLE_LOCAL_REFCOUNT = _sole_local_refcount()   # measured, since interpreters count differently


def _accumulate(leaf: Tensor, g: Any, tensor_cls: type, graph: bool, unshared: bool) -> None:
    """Add ``g`` into ``leaf.grad``. On first use ``.grad`` gets an array that nothing else refers to,
    so it never aliases another array: ``g`` itself when ``unshared`` (the caller's local was its
    only reference) and it owns its memory, as PyTorch steals such buffers; else a copy. With
    create_graph, a recorded sum whose graph can be differentiated again."""
    if tuple(g.shape) != leaf.data.shape:
        raise RuntimeError(
            f"internal error: gradient of shape {g.shape} for a leaf of shape {leaf.data.shape}"
        )
    if graph:       # a recorded copy: never the caller's grad_outputs, nor another leaf's gradient
        leaf._grad = g.clone() if leaf._grad is None else leaf._grad + g
    elif leaf._grad is None:
        if unshared and getattr(g, "base", False) is None and g.ndim:   # an ndarray owning its data
            leaf._grad = tensor_cls._wrap(g)
            return
        with device_scope(leaf.data):                            # the copy stays on the leaf's GPU
            leaf._grad = tensor_cls._wrap(namespace(g).array(g))  # a copy, and an array even for 0-d
    else:
        with device_scope(leaf.data):
            leaf._grad.data = leaf._grad.data + g


# ----------------------------------------------------------------------------- hooks for data parallelism
# DistributedDataParallel must learn, during backward, when a parameter's gradient is final
# (to start reducing it while the rest of backward runs) and when backward has ended (to wait
# for the reductions): PyTorch's Tensor.register_post_accumulate_grad_hook and
# Engine.queue_callback. Without any such hook, backward pays one dict test for them.

_post_accumulate: dict[int, tuple[weakref.ref, list[Callable]]] = {}   # id(leaf) -> (leaf, hooks)


def add_post_accumulate_hook(leaf: Tensor, hook: Callable) -> list[Callable]:
    """Register ``hook(leaf)`` to run once backward has accumulated ``leaf``'s gradient; returns
    the leaf's hook list (for a RemovableHandle)."""
    entry = _post_accumulate.get(id(leaf))
    if entry is None or entry[0]() is not leaf:
        key = id(leaf)
        forget = _post_accumulate.pop       # held, since module globals may be gone at exit
        entry = _post_accumulate[key] = (weakref.ref(leaf, lambda _: forget(key, None)), [])
    entry[1].append(hook)
    return entry[1]


def _run_post_accumulate_hooks(leaf: Tensor) -> None:
    for hook in list(_post_accumulate[id(leaf)][1]):
        hook(leaf)


def _ready_leaves(start: Sequence[Node]) -> list[tuple[int, Tensor]]:
    """(seq of its oldest consumer, leaf) for each hooked leaf reachable from ``start``, by that seq.

    The walk runs nodes newest first and never runs a node older than one that has run
    before, so once it is about to run a node older than a leaf's oldest consumer, no
    gradient can reach that leaf any more: its gradient is final.
    """
    oldest: dict[int, tuple[int, Tensor]] = {}
    seen = set(start)
    stack = list(start)
    while stack:
        node = stack.pop()
        for parent in node:
            if type(parent) is Node:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
            elif parent is not None and id(parent) in _post_accumulate:
                known = oldest.get(id(parent))
                if known is None or node.seq < known[0]:
                    oldest[id(parent)] = (node.seq, parent)
    return sorted(oldest.values(), key=_by_first)    # the walk pops the newest from the end


def _by_first(entry: tuple) -> int:
    return entry[0]


def _finish_ready_leaves(ready: list[tuple[int, Tensor]], seq: int, grads: dict, graph: bool) -> None:
    """Accumulate, then run the post-accumulate hooks of, every leaf whose consumers are all newer
    than ``seq`` (the node about to run); a leaf no gradient reached is skipped, as in PyTorch."""
    from .tensor import Tensor  # noqa: PLC0415

    while ready and ready[-1][0] > seq:
        leaf = ready.pop()[1]
        if leaf not in grads:
            continue
        g = grads.pop(leaf)
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, graph)
        unshared = sys.getrefcount(g) <= _SOLE_LOCAL_REFCOUNT
        _accumulate(leaf, g, Tensor, graph, unshared)
        _run_post_accumulate_hooks(leaf)


class _CallbackStack(threading.local):
    def __init__(self) -> None:
        self.stack: list[list[Callable[[], Any]]] = []   # one list per backward pass running


_callbacks = _CallbackStack()


def queue_callback(fn: Callable[[], Any]) -> None:
    """Run ``fn()`` when the backward pass now running (in this thread) has delivered every gradient."""
    if not _callbacks.stack:
        raise RuntimeError("queue_callback: no backward pass is running in this thread; call it from "
                           "a hook while backward runs")
    _callbacks.stack[-1].append(fn)


def iter_graph(root: Node) -> Iterator[Node]:
    """Every node reachable from ``root`` (each once)."""
    seen = {root}
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        for p in node.parents:
            if type(p) is Node and p not in seen:
                seen.add(p)
                stack.append(p)
