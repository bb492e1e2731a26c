"""The lessons' exercises: every solution in tests/solutions/ passes its check, every listed wrong answer fails it with a
message that says what differs and gives the hint, an untouched stub is "not done yet", and errors inside an answer never
escape the check. Every exercise has a solution and a wrong answer, and every lesson that has exercises asks them all."""
import importlib.util, json, re
from pathlib import Path

import pytest

from minddpm.exercises import EXERCISES, check, difference, verdict
from test_project import ROOT

def solutions():
    "Lesson → its solutions module."
    res = {}
    for p in sorted((ROOT/'tests'/'solutions').glob('[0-9][0-9]_*.py')):
        spec = importlib.util.spec_from_file_location(f'solutions_{p.stem}', p)
        res[p.stem] = importlib.util.module_from_spec(spec); spec.loader.exec_module(res[p.stem])
    return res

SOLVED = solutions()

def test_every_exercise_has_a_solution_and_a_wrong_answer_in_its_lessons_file():
    for name, ex in EXERCISES.items():
        assert ex.lesson in SOLVED, f"no tests/solutions/{ex.lesson}.py for {name}"
        assert name in SOLVED[ex.lesson].SOLUTIONS, f"{ex.lesson}: no solution to {name}"
        assert any(w[0] == name for w in SOLVED[ex.lesson].WRONG), f"{ex.lesson}: no wrong answer to {name}"

@pytest.mark.parametrize('name', list(EXERCISES))
def test_the_solution_passes(name, capsys):
    solution = SOLVED[EXERCISES[name].lesson].SOLUTIONS[name]
    assert verdict(solution, name) == 'right' and check(solution, name) is None
    assert capsys.readouterr().out.startswith(f'✓ {name}')

@pytest.mark.parametrize('lesson,k', [(l, k) for l, m in SOLVED.items() for k in range(len(m.WRONG))])
def test_a_wrong_answer_fails_saying_what_differs(lesson, k, capsys):
    name, fn, says = SOLVED[lesson].WRONG[k]
    assert verdict(fn, name) == 'wrong' and capsys.readouterr().out == ''   # the verdict alone prints nothing
    check(fn, name)
    out = capsys.readouterr().out
    assert out.startswith(f'✗ {name}(') and says in out and f'hint: {EXERCISES[name].hint}' in out, out
    assert 'Traceback' not in out

def test_a_stub_is_not_done_and_so_is_one_that_raises_not_implemented(capsys):
    def snr(alpha_bars): ...
    def cosine_alpha_bars(T, s=0.008): raise NotImplementedError
    assert verdict(snr) == verdict(cosine_alpha_bars) == 'not done'
    check(snr); check(cosine_alpha_bars)
    assert capsys.readouterr().out.count('not done yet') == 2

def test_other_names_and_signatures_are_said_plainly(capsys):
    def snr_of(alpha_bars): return alpha_bars
    assert verdict(snr_of) == 'wrong'
    check(snr_of)
    assert "there is no exercise named 'snr_of'" in capsys.readouterr().out
    def snr(abar, extra): return abar
    assert verdict(snr) == 'wrong'
    check(snr)
    assert "keep the stub's parameter names" in capsys.readouterr().out
    def snr(abar): return abar / (1 - abar)                          # right, under another name: taken by position
    assert verdict(snr) == verdict(lambda a: a / (1 - a), 'snr') == 'right'
    for not_a_function in (42, None):
        assert verdict(not_a_function) == 'wrong'
        check(not_a_function)
        assert 'check takes your function itself' in capsys.readouterr().out

def test_a_difference_is_shown_with_the_digits_that_tell_it():
    import torch
    w = torch.tensor([7.116610000, 1.0], dtype=torch.float64)
    said = difference(w + 1e-7, w)
    assert said.startswith('at index (0,) it gives 7.1166101, the reference 7.11661'), said

def test_differences_are_named_by_kind():
    import torch
    want = torch.zeros(2, 3)
    assert 'not a tensor' in difference([0, 0], want)
    assert 'its shape is (3, 2)' in difference(torch.zeros(3, 2), want)
    assert 'its dtype is torch.int64' in difference(torch.zeros(2, 3, dtype=torch.long), want)
    assert 'at index (1, 2) it gives 5' in difference(torch.zeros(2, 3).index_put_((torch.tensor(1), torch.tensor(2)), torch.tensor(5.)), want)
    assert 'nan' in difference(torch.full((2, 3), float('nan')), want)
    assert difference(3, 3.0) is None and 'it gives 4' in difference(4, 3)
    assert 'its dtype is torch.float32, the reference\'s torch.float64' in difference(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    assert '`.item()`' in difference(torch.tensor(0.5), 0.5)                        # a float was asked for, not a 0-d tensor
    assert 'it gives 65,536, the reference 67,108,864' in difference(65536, 2**26)   # counts exactly, not 6.71089e+07
    assert 'tensor([4e-05, 0.5])' in difference([torch.tensor([4e-5, 0.5])], torch.ones(2))   # small values keep their digits
    assert len(difference((torch.zeros(4, 8, 8), torch.zeros(4, 8, 8)), torch.zeros(4, 8, 8))) < 200   # a tuple is summed up

def test_the_kind_asked_for_is_the_kind_accepted():
    import numpy as np, torch
    assert 'not an int' in difference(599.0, 599) and difference(np.int64(599), 599) is None
    assert 'the reference a list of 2' in difference((0, 1), [0, 1]) and 'the reference a tuple of 2' in difference([0.5, 1.0], (0.5, 1.0))
    assert 'a 0-d torch.float64 tensor(5)' in difference(torch.tensor(5.0, dtype=torch.float64), 5.0)

def test_float64_is_held_to_float64_and_long_answers_are_cut(capsys):
    import numpy as np, torch
    w = torch.linspace(1e-4, 0.999, 1000, dtype=torch.float64)
    assert difference(w * (1 + 1e-5), w) and difference(w.float().double(), w) and difference(w * (1 + 1e-12), w) is None
    assert difference(w.float() * (1 + 1e-6), w.float()) is None          # float32 keeps float32's tolerance
    assert len(difference(np.ones(1000), torch.ones(1000))) < 200
    def snr(alpha_bars): alpha_bars / (1 - alpha_bars)                    # the body written, the return forgotten
    assert verdict(snr) == 'not done'
    check(snr)
    assert '`return` its result' in capsys.readouterr().out

def test_an_answer_that_changes_its_input_in_place_is_wrong(capsys):
    import math
    def renoise_by_hand(x_s, alpha_bar_s, alpha_bar_t, z):
        r = alpha_bar_t / alpha_bar_s
        return x_s.mul_(math.sqrt(r)).add_(math.sqrt(1 - r) * z)   # the right values, written over x_s
    assert verdict(renoise_by_hand) == 'wrong'
    check(renoise_by_hand)
    assert 'changed its argument x_s in place' in capsys.readouterr().out

def test_a_type_error_inside_an_answer_is_not_blamed_on_the_parameter_names(capsys):
    import math, torch
    def ddim_step_by_hand(xt, eps_hat, alpha_bar_t, alpha_bar_s): return torch.sqrt(alpha_bar_s) * xt
    assert verdict(ddim_step_by_hand) == 'wrong'
    check(ddim_step_by_hand); out = capsys.readouterr().out
    assert 'must be Tensor, not float' in out and 'parameter names' not in out, out

@pytest.mark.parametrize('lesson', sorted({e.lesson for e in EXERCISES.values()}))
def test_each_lesson_asks_its_exercises_as_stubs_and_checks_them(lesson):
    "The lesson holds a stub (body `...`) and a `check` call for each of its exercises, and no solution."
    cells = [''.join(c['source']) for c in json.loads((ROOT/'nbs'/f'{lesson}.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
    names = [n for n, e in EXERCISES.items() if e.lesson == lesson]
    for n in names:
        cell = next((c for c in cells if re.search(rf'^def {n}\(', c, re.M)), None)
        assert cell, f"{lesson}: no stub for {n}"
        body = [l for l in cell.split(f'def {n}(')[1].splitlines()[1:] if l.strip() and not l.startswith('check(')]
        assert [l.split('#')[0].strip() for l in body] == ['...'], f"{lesson}: the stub of {n} is not bare: {body}"
        assert f'check({n})' in cell

def test_the_readme_says_how_many_exercises_each_lesson_has():
    readme = (ROOT/'README.md').read_text()
    for lesson in sorted({e.lesson for e in EXERCISES.values()}):
        row = next(l for l in readme.splitlines() if f'](nbs/{lesson}.ipynb)' in l and l.startswith('| ['))
        n = sum(e.lesson == lesson for e in EXERCISES.values())
        assert f'**{n} exercises**' in row, f"README's row for {lesson} should say **{n} exercises**"
