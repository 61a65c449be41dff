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

    Subclasses implement `forward(*arrays) -> array` and `backward(grad) -> grad per input`
    (a Tensor or None; None means zero). Set `saves_inputs = False` when backward never reads the
    input values, so in-place changes to them stay legal.
    """

    saves_inputs = True
    inputs = None
    _out = None

    def __call__(self, *inputs):
        y = self.forward(*[x.data for x in inputs])
        if type(y) is not _ndarray and isinstance(y, _generic):  # numpy returns scalars for 0-d results
            y = _asarray(y)
        out = Tensor._make(y)
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
    def output(self):
        """The output tensor (for backward formulas that reuse it, e.g. exp, tanh)."""
        return self._out()

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, gy):
        raise NotImplementedError

    @property
    def name(self):
        return type(self).__name__


def _release(fn):
    fn.inputs = None
    fn._out = None
    fn.__dict__.clear()


def _order(roots):
    """Functions reachable from `roots`, each after every function that consumes its output."""
    consumers = {}
    stack = list(roots)
    seen = set(id(f) for f in roots)
    for f in roots:
        consumers.setdefault(f, 0)
    while stack:
        f = stack.pop()
        if f.inputs is None:
            raise RuntimeError(
                f"Trying to backward through the graph a second time (op {f.name}): its saved values were freed; "
                "pass retain_graph=True to the first backward")
        for x in f.inputs:
            g = x._ctx
            if g is not None:
                consumers[g] = consumers.get(g, 0) + 1
                if id(g) not in seen:
                    seen.add(id(g))
                    stack.append(g)
    ready = [f for f in roots if consumers[f] == 0]
    order = []
    while ready:
        f = ready.pop()
        order.append(f)
        for x in f.inputs:
            g = x._ctx
            if g is not None:
                consumers[g] -= 1
                if consumers[g] == 0:
                    ready.append(g)
    return order


def _accumulate(grads, key, g):
    prev = grads.get(key)
    grads[key] = g if prev is None else prev + g


def run_backward(outputs, grad_outputs, inputs=None, retain_graph=False, create_graph=False):
    """Propagate `grad_outputs` from `outputs`. With `inputs` None, accumulate into leaf `.grad`;
    otherwise return the gradients of `inputs` (None where unreached)."""
    global _grad_enabled
    grads = {}  # id(tensor or function) -> gradient Tensor; function keys stand for their output
    roots = []
    for out, g in zip(outputs, grad_outputs):
        if out._ctx is None:
            _accumulate(grads, id(out), g)
        else:
            _accumulate(grads, id(out._ctx), g)
            if out._ctx not in roots:
                roots.append(out._ctx)
    wanted = None
    if inputs is not None:
        wanted = {}
        for t in inputs:
            wanted.setdefault(id(t._ctx) if t._ctx is not None else id(t), None)
    order = _order(roots)
    for f in order:  # checked up front so an error leaves every .grad untouched
        if f.saves_inputs:
            for x, v in zip(f.inputs, f.versions):
                if x._version != v:
                    raise RuntimeError(
                        f"a tensor needed by {f.name} for its gradient was modified in place after it was used "
                        f"(version {x._version}, expected {v})")
    prev_mode, _grad_enabled = _grad_enabled, create_graph
    try:
        for f in order:
            gy = grads.pop(id(f), None)
            if wanted is not None and id(f) in wanted:
                wanted[id(f)] = gy
            if gy is None:
                continue
            gxs = f.backward(gy)
            if type(gxs) is not tuple:
                gxs = (gxs,)
            for x, gx in zip(f.inputs, gxs):
                if gx is None or not x.requires_grad:
                    continue
                if x._ctx is not None:
                    _accumulate(grads, id(x._ctx), gx)
                elif wanted is None:
                    x.grad = gx if x.grad is None else x.grad + gx
                elif id(x) in wanted:
                    _accumulate(grads, id(x), gx)
    finally:
        _grad_enabled = prev_mode
    if not retain_graph:  # freed only at the end: backward formulas may read outputs of nodes processed earlier
        for f in order:
            _release(f)
    if wanted is None:
        for out, g in zip(outputs, grad_outputs):  # backward called on a leaf itself
            if out._ctx is None and out.requires_grad:
                out.grad = g if out.grad is None else out.grad + g
        return None
    for key in wanted:
        if wanted[key] is None and key in grads:
            wanted[key] = grads[key]
    return [wanted[id(t._ctx) if t._ctx is not None else id(t)] for t in inputs]


def _check_outputs(outputs, grad_outputs):
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
