"""Define-by-run reverse-mode autodiff.

Every op is a `Function`: `forward` works on raw arrays, `backward` is written with
differentiable Tensor ops. Backward runs under `no_grad` unless `create_graph=True`, in which
case the gradient is itself a graph and can be differentiated again (higher-order gradients).
"""
import functools
import weakref

from numpy import asarray as _asarray, generic as _generic, ndarray as _ndarray

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode:
    """Context manager and decorator that sets whether ops record a graph."""

    mode = True

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, self.mode

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    mode = False


class enable_grad(_GradMode):
    mode = True


class set_grad_enabled(_GradMode):
    def __init__(self, mode: bool):
        self.mode = bool(mode)

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class Function:
    """One node of the graph: a single-output op.

    Subclasses implement `forward(*arrays) -> array` and `backward(gy) -> one gradient per input`
    (None means zero). Backward formulas read their operands through `self.args` and `self.output`
    and build results with operators and core ops, so one formula serves two modes: with
    `create_graph` the operands are Tensors and the gradient is itself differentiable; otherwise they
    are raw arrays and the same formula runs as plain array code (calling a Function on raw arrays
    just runs its forward). Set `saves_inputs = False` when backward never reads input values, so
    in-place changes to them stay legal.
    """

    saves_inputs = True
    inputs = None
    _out = None
    _raw = False
    _needs = None

    def __call__(self, *inputs):
        first = inputs[0]
        if first.__class__ is not Tensor and not isinstance(first, Tensor):  # raw arrays: no-graph backward
            return self.forward(*inputs)
        n = len(inputs)  # unrolled for the common arities: this line runs once per op
        y = (self.forward(first.data) if n == 1 else self.forward(first.data, inputs[1].data) if n == 2 else
             self.forward(first.data, inputs[1].data, inputs[2].data) if n == 3 else
             self.forward(*[x.data for x in inputs]))
        if y.__class__ is not _ndarray and isinstance(y, _generic):  # numpy returns scalars for 0-d results
            y = _asarray(y)
        out = _new_tensor(Tensor)
        out.data, out.grad, out.requires_grad, out._ctx, out._version = y, None, False, None, 0
        if _grad_enabled:
            for x in inputs:
                if x.requires_grad:
                    out.requires_grad = True
                    out._ctx = self
                    self.inputs = inputs
                    self._out = weakref.ref(out)
                    if self.saves_inputs:
                        self.versions = [x._version for x in inputs]
                    break
        return out

    @property
    def args(self):
        """The inputs as backward should use them: arrays in no-graph mode, Tensors otherwise."""
        return [x.data for x in self.inputs] if self._raw else self.inputs

    @property
    def output(self):
        """The output (for formulas that reuse it, e.g. exp, tanh), in the same mode as `args`."""
        out = self._out()
        return out.data if self._raw else out

    def needs_grad(self, i):
        """Whether backward must produce the gradient of input i (core.grad prunes paths to unwanted leaves)."""
        needs = self._needs
        return self.inputs[i].requires_grad if needs is None else needs[i]

    def const(self, array):
        """An array computed in forward (a mask, a factor) as a constant operand for backward."""
        if self._raw:
            return array
        return Tensor._make(_asarray(array) if isinstance(array, _generic) else array)

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    @property
    def name(self):
        return type(self).__name__


def _release(fn):
    fn.__dict__.clear()  # falls back to the class defaults: inputs None marks a freed node


def _order(roots):
    """Functions reachable from `roots`, consumers before producers (iterative DFS, reverse postorder).
    Functions hash by identity, so they go into the set themselves."""
    post, seen = [], set()
    stack = [(f, False) for f in roots]
    pop, push = stack.pop, stack.append
    while stack:
        f, expanded = pop()
        if expanded:
            post.append(f)
            continue
        if f in seen:
            continue
        seen.add(f)
        inputs = f.inputs
        if inputs is None:
            raise RuntimeError(
                f"Trying to backward through the graph a second time (op {f.name}): its saved values were freed; "
                "pass retain_graph=True to the first backward")
        push((f, True))
        for x in inputs:
            g = x._ctx
            if g is not None and g not in seen:
                push((g, False))
    post.reverse()
    return post


def run_backward(outputs, grad_outputs, inputs=None, retain_graph=False, create_graph=False):
    """Propagate `grad_outputs` from `outputs`. With `inputs` None, accumulate into leaf `.grad`;
    otherwise return the gradients of `inputs` (None where unreached)."""
    global _grad_enabled
    raw = not create_graph
    grads = {}  # function -> gradient of its output; id(leaf) -> gradient (core.grad only)
    roots = []
    for out, g in zip(outputs, grad_outputs):
        key = out._ctx if out._ctx is not None else id(out)
        g = g.data if raw else g
        grads[key] = g if key not in grads else grads[key] + g
        if out._ctx is not None and out._ctx not in roots:
            roots.append(out._ctx)
    wanted = None
    if inputs is not None:
        wanted = {t._ctx if t._ctx is not None else id(t): None for t in inputs}
    order = _order(roots)
    for f in order:  # checked up front so an error leaves every .grad untouched
        if f.saves_inputs:
            for x, v in zip(f.inputs, f.versions):
                if x._version != v:
                    raise RuntimeError(
                        f"a tensor needed by {f.name} for its gradient was modified in place after it was used "
                        f"(version {x._version}, expected {v})")
    if wanted is not None:
        _mark_needed(order, wanted)
    leaf_grads = {}  # id(leaf) -> [leaf, gradient] in backward mode
    prev_mode, _grad_enabled = _grad_enabled, create_graph
    try:
        for f in order:
            gy = grads.pop(f, None)
            if wanted is not None and f in wanted:
                wanted[f] = gy
            if gy is None or (f._needs is not None and True not in f._needs):
                continue
            f._raw = raw
            gxs = f.backward(gy)
            if type(gxs) is not tuple:
                gxs = (gxs,)
            for x, gx in zip(f.inputs, gxs):
                if gx is None or not x.requires_grad:
                    continue
                if raw and isinstance(gx, Tensor):  # a formula that built Tensors anyway
                    gx = gx.data
                key = x._ctx
                if key is None:
                    key = id(x)
                    if wanted is None:
                        entry = leaf_grads.get(key)
                        if entry is None:
                            leaf_grads[key] = [x, gx]
                        else:
                            entry[1] = entry[1] + gx
                        continue
                    if key not in wanted:
                        continue
                prev = grads.get(key)
                grads[key] = gx if prev is None else prev + gx
    finally:
        _grad_enabled = prev_mode
    if not retain_graph:  # freed only at the end: backward formulas may read outputs of nodes processed earlier
        for f in order:
            _release(f)
    elif wanted is not None:
        for f in order:
            f.__dict__.pop("_needs", None)
    if wanted is None:
        for out, g in zip(outputs, grad_outputs):  # backward called on a leaf itself
            if out._ctx is None and out.requires_grad:
                leaf_grads.setdefault(id(out), [out, None])[1] = g.data if raw else g
        _store_leaf_grads(leaf_grads.values(), raw)
        return None
    for key in wanted:
        if wanted[key] is None and key in grads:
            wanted[key] = grads[key]
    result = [wanted[t._ctx if t._ctx is not None else id(t)] for t in inputs]
    return [g if g is None or not raw else _own(g, t) for g, t in zip(result, inputs)]


def _mark_needed(order, wanted):
    """For core.grad: flag, per node and input, whether a wanted tensor lies behind it, so backward
    skips gradients nobody asked for (e.g. a critic's weight gradients inside a gradient penalty)."""
    reaches = set(wanted)  # functions (and ids of leaves) from which a wanted tensor is reachable
    for f in reversed(order):  # producers before consumers
        needs = tuple(x.requires_grad and ((x._ctx is not None and x._ctx in reaches) or id(x) in wanted)
                      for x in f.inputs)
        f._needs = needs
        if True in needs:
            reaches.add(f)


def _own(g, like):
    """A gradient array as a Tensor of its own: views and shared arrays are copied, so in-place
    updates of one `.grad` (clipping, say) never reach another."""
    if isinstance(g, _generic):
        g = _asarray(g)
    elif g.base is not None or not getattr(g.flags, "writeable", True):  # a view, or read-only (numpy only)
        g = g.copy()
    if g.dtype != like.data.dtype:
        g = g.astype(like.data.dtype)
    return Tensor._make(g)


def _store_leaf_grads(entries, raw):
    seen = set()
    for leaf, g in entries:
        if raw:
            if id(g) in seen:
                g = g.copy()
            seen.add(id(g))
            g = _own(g, leaf)
        if leaf.grad is None:
            leaf.grad = g
        elif raw:
            leaf.grad = Tensor._make(leaf.grad.data + g.data)
        else:
            leaf.grad = leaf.grad + g


def _check_outputs(outputs, grad_outputs):
    if grad_outputs is None and outputs.__class__ is Tensor and outputs.requires_grad and outputs.data.size == 1:
        return [outputs], [Tensor._make(outputs.xp.ones_like(outputs.data))]  # loss.backward(): the common case
    if isinstance(outputs, Tensor):
        outputs = [outputs]
    outputs = list(outputs)
    if grad_outputs is None or isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs] * len(outputs) if grad_outputs is None else [grad_outputs]
    grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad_outputs has {len(grad_outputs)} entries for {len(outputs)} outputs")
    gs = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of outputs does not require grad and has no grad_fn")
        if g is None:
            if out.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs, got shape {out.shape}; pass grad_outputs")
            g = Tensor._make(out.xp.ones_like(out.data))
        elif not isinstance(g, Tensor):
            g = Tensor._make(out.xp.asarray(g, dtype=out.dtype))
        if g.shape != out.shape:
            raise ValueError(f"grad_outputs[{i}] has shape {g.shape} but output has shape {out.shape}")
        gs.append(g)
    return outputs, gs


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Accumulate d(tensors)/d(leaf) into every leaf's `.grad`."""
    outputs, gs = _check_outputs(tensors, grad_tensors)
    run_backward(outputs, gs, None, bool(create_graph if retain_graph is None else retain_graph), create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Gradients of `outputs` w.r.t. `inputs`, returned as a tuple (leaf `.grad` untouched)."""
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"input {i} does not require grad (shape {t.shape}, dtype {t.dtype})")
    outputs, gs = _check_outputs(outputs, grad_outputs)
    retain = create_graph if retain_graph is None else retain_graph
    result = run_backward(outputs, gs, inputs, bool(retain), create_graph)
    for i, g in enumerate(result):
        if g is None and not allow_unused:
            raise RuntimeError(f"input {i} was not used to compute the outputs; pass allow_unused=True")
    return tuple(g if create_graph or g is None else g.detach() for g in result)


from core.tensor import Tensor  # noqa: E402  (Tensor builds on Function; imported last to break the cycle)

_new_tensor = Tensor.__new__
