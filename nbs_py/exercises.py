# %%
#| default_exp exercises

# %% [markdown]
# # Exercises
# > The checks behind the exercises at the end of each lesson: your function against the reference on a few inputs, random and edge cases; ✓, or what differs and a hint, never a traceback from inside the checker

# %% [markdown]
# Each lesson ends with a few exercises: a function to write, given as a stub whose body is `...`. Under it, one call,
# `check(your_function)`, runs it on the inputs of that exercise, compares what it returns with the reference answer
# and prints one of three things:
#
# - **✓** and the number of inputs it matched on;
# - **not done yet**, while the body is still `...` (or raises `NotImplementedError`): the notebook goes on, so "Run
#   all" works with every exercise unsolved;
# - **✗**, the first input on which your answer differs, *what* differs (the type, the shape, the dtype, or the
#   value at one position, yours against the reference), and a hint. An error raised by your function is reported the
#   same way, with its message, and never stops the notebook; so is an answer that changes its inputs in place.
#
# An answer must be of the kind asked for: the reference's dtype (float64 is held to float64's accuracy), an int where
# an int is asked, a float rather than a 0-d tensor, a list or a tuple as the stub says.
#
# The checks ship with minddpm, so they work on Colab with no clone of the course. The solutions are in the
# repository, out of the student's way (`tests/solutions/`), where the tests run each through its check, with a wrong
# answer or two that the check must catch.

# %%
#| export
from __future__ import annotations
import math, numbers, re
from typing import Callable

import torch

from minddpm.exercise_references import EXERCISES   # every exercise: its lesson, reference answer, inputs and hint

# %%
#| hide
from fastcore.test import *
from nbdev.showdoc import show_doc
from IPython.display import Markdown, display

# %% [markdown]
# How an answer is compared with the reference, and how an input is described in a message: numbers as they are,
# small tensors by their values, others by shape and dtype.

# %%
#| export
def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        show = lambda v: f'{v:.4g}' if isinstance(v, float) else str(v)
        if value.ndim == 0: return f"a 0-d {value.dtype} tensor({show(value.item())})"
        if value.ndim == 1 and value.numel() <= 8: return f"tensor([{', '.join(map(show, value.tolist()))}])"
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        return f"a {type(value).__name__} of {len(value)}: " + ', '.join(map(_describe, value))
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:100]} … ({type(value).__name__}{f' of shape {value.shape}' if hasattr(value, 'shape') else ''})"

def _digits(got: float, want: float) -> str:
    "'g, the reference w' with as many digits as it takes (up to 17) for the two to read differently."
    for n in (6, 9, 12, 17):
        if f'{got:.{n}g}' != f'{want:.{n}g}': break
    return f"{got:.{n}g}, the reference {want:.{n}g}"

def _inputs(kwargs: dict) -> str: return ', '.join(f'{k}={_describe(v)}' for k, v in kwargs.items())

def difference(got,                 # an answer: a tensor, a number, or a tuple or list of them
               want,                # the reference's answer to the same input
               atol: float = 1e-5,  # absolute tolerance on each number
               rtol: float = 1e-4,  # relative tolerance on each number
               ) -> str | None:
    "What differs between an answer `got` and the reference's `want` (type, shape, dtype, or the worst value), or None."
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor): return f"it returned {type(got).__name__} {_describe(got)}, not a tensor"
        if got.shape != want.shape: return f"its shape is {tuple(got.shape)}, the reference's {tuple(want.shape)}"
        if got.dtype != want.dtype: return f"its dtype is {got.dtype}, the reference's {want.dtype}"
        if want.dtype == torch.float64: atol, rtol = min(atol, 1e-10), min(rtol, 1e-8)   # float64 asked for: float64's accuracy
        g, w = got.detach().double().cpu(), want.detach().double().cpu()
        if not torch.isfinite(g).all() and torch.isfinite(w).all():
            i = tuple(torch.nonzero(~torch.isfinite(g))[0].tolist())
            return f"it holds {g[i].item()} at index {i}, where the reference holds {w[i].item():.6g}"
        bad = (g - w).abs() > atol + rtol * w.abs()
        if bad.any():
            i = tuple(torch.nonzero(bad)[(g - w).abs()[bad].argmax()].tolist()) if bad.ndim else ()
            return f"at index {i} it gives {_digits(g[i].item(), w[i].item())}"
        return None
    if isinstance(want, (tuple, list)):
        if type(got) is not type(want) or len(got) != len(want):
            return f"it returned {_describe(got)}, the reference a {type(want).__name__} of {len(want)}"
        for k, (g, w) in enumerate(zip(got, want)):
            if (d := difference(g, w, atol, rtol)): return f"in item {k}, {d}"
        return None
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if isinstance(got, torch.Tensor): return f"it returned {_describe(got)}, a tensor, not a number: `.item()` gives its number"
        if not isinstance(got, numbers.Real) or isinstance(got, bool): return f"it returned {_describe(got)}, not a number"
        if isinstance(want, int) and not isinstance(got, numbers.Integral): return f"it returned {got!r}, not an int"
        if isinstance(got, int) and isinstance(want, int) and got != want: return f"it gives {got:,}, the reference {want:,}"   # a byte count, exactly
        return None if math.isclose(got, want, rel_tol=rtol, abs_tol=atol) else f"it gives {_digits(got, want)}"
    return None if got == want else f"it returned {_describe(got)}, the reference {_describe(want)}"

# %% [markdown]
# `check` itself, which prints and returns nothing (a notebook cell then shows its message alone), and `verdict`, the
# same judgement as a word, `'right'`, `'wrong'` or `'not done'`, printed by nobody, for tests:

# %%
#| export
def _judge(answer: Callable, name: str | None, say: Callable) -> str:
    "`check`'s judgement of `answer` as a word; `say` is handed each message."
    if not callable(answer):
        say(f"✗ check takes your function itself, e.g. check(snr) after def snr(alpha_bars): …; it was given "
            f"{_describe(answer)}, a {type(answer).__name__}"); return 'wrong'
    name = name or getattr(answer, '__name__', '?')
    if name not in EXERCISES:
        say(f"✗ there is no exercise named {name!r}; the exercises are {', '.join(EXERCISES)}"); return 'wrong'
    ex = EXERCISES[name]
    cases = ex.cases()
    copy = lambda kw: {a: v.clone() if isinstance(v, torch.Tensor) else v for a, v in kw.items()}
    for k, kwargs in enumerate(cases):
        want, given = ex.reference(**copy(kwargs)), copy(kwargs)
        try:
            try: got = answer(**given)
            except TypeError as e:   # other parameter names (a lambda, say): the stub's order, by position
                if not re.search(r'unexpected keyword argument', str(e)): raise
                try: got = answer(*given.values())
                except TypeError as by_position:
                    if 'positional argument' in str(by_position): raise e from None   # nor by position: say so by name
                    raise
        except NotImplementedError:
            say(f"… {name}: not done yet (it raises NotImplementedError)"); return 'not done'
        except Exception as e:
            said = f"✗ {name}({_inputs(kwargs)}) raised {type(e).__name__}: {e}"
            if isinstance(e, TypeError) and re.search(r'unexpected keyword argument|required (positional|keyword-only) argument', str(e)):
                said += f"\n  check calls it with keyword arguments {', '.join(kwargs)}: keep the stub's parameter names"
            say(f"{said}\n  hint: {ex.hint}"); return 'wrong'
        if got is None and want is not None:
            if k == 0: say(f"… {name}: not done yet (it returns None: write its body, and `return` its result)"); return 'not done'
            say(f"✗ {name}({_inputs(kwargs)}) returned None\n  hint: {ex.hint}"); return 'wrong'
        if (d := difference(got, want, ex.atol, ex.rtol)):
            say(f"✗ {name}({_inputs(kwargs)}): {d}\n  hint: {ex.hint}"); return 'wrong'
        if (changed := [a for a, v in given.items() if isinstance(v, torch.Tensor) and not torch.equal(v, kwargs[a])]):
            say(f"✗ {name}({_inputs(kwargs)}) changed its argument {changed[0]} in place: return a new tensor and leave the "
                f"inputs as they were (a caller may still need them)"); return 'wrong'
    say(f"✓ {name}: the reference's answer on all {len(cases)} inputs"); return 'right'

def check(answer: Callable,        # your function; its name says which exercise it answers
          name: str | None = None, # the exercise's name, where the function has another
          ) -> None:
    "Run `answer` on its exercise's inputs and compare it with the reference; print ✓, not done yet, or what differs and a hint."
    _judge(answer, name, print)

def verdict(answer: Callable,        # a function answering an exercise
            name: str | None = None, # the exercise's name, where the function has another
            ) -> str:                # 'right', 'wrong' or 'not done'
    "What `check` would say of `answer`, as one word, printing nothing."
    return _judge(answer, name, lambda text: None)

# %%
show_doc(difference)

# %%
show_doc(check)

# %%
show_doc(verdict)

# %% [markdown]
# ## The exercises, lesson by lesson
#
# The reference answers are a module of their own, [`minddpm.exercise_references`](exercise_references.ipynb), whose
# page shows none of them so that it gives no solution away (the package's source holds them, as the repository holds
# the solutions: look there only when stuck). `check` finds them in its `EXERCISES`. Each
# is the lesson's own formula written out plainly, and takes the arguments the lesson's stub takes. The inputs are
# made by a seeded generator, so every check sees the same ones. The exercises, by lesson:

# %%
show_table = lambda rows: display(Markdown('| exercise | lesson |\n|---|---|\n' + '\n'.join(f'| `{n}` | {e.lesson} |' for n, e in rows)))
show_table(EXERCISES.items())

# %% [markdown]
# What a student sees, for an unsolved stub, a wrong answer, one that raises, and the right one:

# %%
def snr(alpha_bars): ...
check(snr); test_eq(verdict(snr), 'not done')
def snr(alpha_bars): return (1 - alpha_bars) / alpha_bars
check(snr); test_eq(verdict(snr), 'wrong')
def snr(alpha_bars): return alpha_bars / (1 - alpha_bars.sum(1))
check(snr); test_eq(verdict(snr), 'wrong')
def snr(alpha_bars): return alpha_bars / (1 - alpha_bars)
check(snr); test_eq(verdict(snr), 'right')
