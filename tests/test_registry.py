"""The strategy registry, `lrbench list strategies`, hyperparameter validation, entry points."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import HANG_S, REPO

import strategies
from benchmarks.cli import main
from benchmarks.errors import LrbenchError
from strategies import (
    INFRASTRUCTURE,
    StrategyError,
    available_strategies,
    get_strategy,
    make_config,
    make_plugin,
    strategy_modules,
)

BASELINES = {"finetune", "joint", "lwf", "ewc", "mas", "l2_kd", "replay"}


def test_list_strategies_json_has_the_baselines_with_hyperparameters(capsys):
    assert main(["list", "strategies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= BASELINES
    assert {h["name"]: h["default"] for h in rows["lwf"]["hyperparameters"]} == {
        "lam": 1.0, "temperature": 2.0, "ce_weight": 1.0}
    assert rows["ewc"]["hyperparameters"][1]["type"] == "one of separate, online"
    assert all(r["summary"] for r in rows.values())
    assert main(["list", "strategies"]) == 0
    assert "hyperparameters: mem_size=500" in capsys.readouterr().out


def test_hyperparameters_are_typed_and_validated():
    assert make_config("l2_kd", {"lam": "2.5"}).lam == 2.5
    with pytest.raises(StrategyError, match="has no hyperparameter 'lamda'; its hyper"):
        make_config("l2_kd", {"lamda": 1})
    with pytest.raises(StrategyError, match="'lam'.*greater than or equal to 0"):
        make_config("l2_kd", {"lam": -1})
    with pytest.raises(StrategyError, match="'mem_size'.*integer"):
        make_config("replay", {"mem_size": "lots"})
    with pytest.raises(StrategyError, match="Did you mean 'l2_kd'"):
        get_strategy("l2kd")
    for error in ("lam", "mem_size"):
        assert "\n" not in str(StrategyError(f"x {error}\n y"))


def test_bad_strategy_on_the_command_line_is_one_line():
    from strategies.registry import register_strategy

    with pytest.raises(TypeError, match="Config must subclass"):
        register_strategy("broken")(type("Broken", (), {}))


def test_external_package_entry_point(tmp_path):
    """A package providing a strategy through the entry point group (a module and its
    dist-info on PYTHONPATH, as an installed package is) shows up with its package and
    version, passes the contract kit, and a cell run with it records where its code came
    from in result.json."""
    site = tmp_path / "site"
    (site / "lrbench_extra_strategy").mkdir(parents=True)
    (site / "lrbench_extra_strategy" / "__init__.py").write_text("")
    (site / "lrbench_extra_strategy" / "cosine_kd.py").write_text(textwrap.dedent('''
        from pydantic import Field
        from strategies import StrategyConfig
        from strategies.teacher import TeacherPlugin

        class CosineKD(TeacherPlugin):
            """Cosine distillation: lam * mean(1 - cos(f_s, f_t)) to the previous model."""
            regularizer = True

            class Config(StrategyConfig):
                lam: float = Field(1.0, ge=0, description="weight")

            def before_backward(self, strategy, **kwargs):
                if self.teacher is not None:
                    f_t = self.teacher_embed(strategy.mb_x)
                    cos = (strategy.mb_output * f_t).sum(1)
                    strategy.add_loss("cosine_kd", self.config.lam * (1 - cos).mean())
    '''))
    info = site / "lrbench_extra_strategy-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrbench-extra-strategy\n"
                                   "Version: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        "[lrbench.strategies]\ncosine_kd = lrbench_extra_strategy.cosine_kd:CosineKD\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    matrix = tmp_path / "m.yaml"
    matrix.write_text((REPO / "configs" / "smoke.yaml").read_text().replace(
        "  l2_kd: {lam: 1.0}", "  cosine_kd: {}").replace("seeds: [0, 1]", "seeds: [0]"))
    # all three at once: each spends most of its time importing
    listing = subprocess.Popen([sys.executable, "-m", "benchmarks", "list", "strategies",
                                "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    kit = subprocess.Popen([sys.executable, "-c", (
        "from benchmarks.contract import check_strategy;"
        "r = check_strategy('cosine_kd'); print(r.checks)")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    run = subprocess.Popen([sys.executable, "-m", "benchmarks", "run", str(matrix), "--out",
                            str(tmp_path / "store"), "--set", "training.iterations=2"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = listing.communicate(timeout=HANG_S)
    assert listing.returncode == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["cosine_kd"]["source"].startswith("entry point")
    assert rows["cosine_kd"]["summary"].startswith("Cosine distillation")
    assert (rows["cosine_kd"]["package"], rows["cosine_kd"]["version"]) == (
        "lrbench-extra-strategy", "0.0.1")
    assert rows["finetune"]["package"] == "lrbench"
    kit_out, kit_err = kit.communicate(timeout=HANG_S)
    assert kit.returncode == 0, kit_err[-2000:]
    assert "regulariser active (cosine_kd)" in kit_out
    run_out, run_err = run.communicate(timeout=HANG_S)
    assert run.returncode == 0, run_err[-2000:]
    cells = tmp_path / "store" / "cells"
    ext = json.loads((cells / "synth-tiny__cosine_kd__seed0" / "result.json").read_text())
    assert ext["strategy_plugin"] == {
        "strategy": "cosine_kd", "package": "lrbench-extra-strategy", "version": "0.0.1",
        "source": "entry point lrbench_extra_strategy.cosine_kd:CosineKD"}
    own = json.loads((cells / "synth-tiny__finetune__seed0" / "result.json").read_text())
    assert own["strategy_plugin"]["package"] == "lrbench"
    assert own["strategy_plugin"]["version"] == importlib.metadata.version("lrbench")
    assert "cosine_kd" not in available_strategies()  # nothing was installed here


def test_builtins_are_registered_with_their_files():
    for name in BASELINES | {"mmd_kd", "fecd", "dkd"}:
        module = get_strategy(name).cls.__module__
        assert module == f"strategies.{name}", (name, module)


def fake_distribution(folder: Path, name: str, entry_points: str) -> Path:
    """A dist-info folder (no pip) declaring ``entry_points`` (lines of the group
    ``lrbench.strategies``) for any process with ``folder`` on its ``PYTHONPATH``."""
    # the folder's name is the normalised one (dashes as underscores): importlib.metadata
    # reads the name before the first dash and keeps one distribution per name, so
    # "lrbench-broken-0.0.0" would be taken for another copy of lrbench and ignored
    info = folder / f"{name.replace('-', '_')}-0.0.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(f"[lrbench.strategies]\n{entry_points}\n")
    return folder


def lrbench(*argv: str, cwd: Path | None = None, path: Path | None = None
            ) -> subprocess.Popen:
    """The real CLI in a subprocess (this checkout's packages; ``path`` first on
    ``PYTHONPATH``), started now: call ``communicate`` on it."""
    pythonpath = os.pathsep.join(str(p) for p in (path, REPO) if p is not None)
    return subprocess.Popen([sys.executable, "-m", "benchmarks", *argv], cwd=cwd or REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": pythonpath})


DROPPED = textwrap.dedent('''
    from avalanche.core import SupervisedPlugin
    from pydantic import Field

    from strategies.registry import StrategyConfig, StrategyPlugin, register_strategy


    @register_strategy("dropped_in")
    class DroppedIn(StrategyPlugin, SupervisedPlugin):
        """Dropped in: a file nobody imports by name."""

        class Config(StrategyConfig):
            lam: float = Field(0.25, ge=0, description="unused")
''')


def test_a_file_dropped_into_strategies_registers(tmp_path):
    """A copy of the package with one more file, and nothing else edited: listed."""
    copy = tmp_path / "checkout"
    shutil.copytree(Path(strategies.__file__).parent, copy / "strategies",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "strategies" / "zz_dropped_in.py").write_text(DROPPED)
    # the working directory comes first on sys.path: this copy is the imported package
    proc = lrbench("list", "strategies", "--json", cwd=copy)
    out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["dropped_in"]["summary"] == "Dropped in: a file nobody imports by name."
    assert rows["dropped_in"]["hyperparameters"][0]["default"] == 0.25
    builtin = {n for n, spec in available_strategies().items()  # others' tests add theirs
               if spec.cls.__module__.startswith("strategies.")}
    assert {n for n, r in rows.items() if r["source"] == "builtin"} == builtin | {"dropped_in"}
    assert "dropped_in" not in available_strategies()  # the real package is untouched


def test_every_strategy_module_registers_and_infrastructure_is_named():
    """The discovery rule: a module not in INFRASTRUCTURE must register a strategy (a new
    helper module belongs in INFRASTRUCTURE), and the infrastructure modules exist."""
    modules = strategy_modules()
    assert modules == sorted(modules) and not set(modules) & INFRASTRUCTURE
    registered_from = {spec.cls.__module__ for spec in available_strategies().values()}
    unregistered = [m for m in modules if f"strategies.{m}" not in registered_from]
    assert not unregistered, f"modules that register no strategy: {unregistered}"
    package = Path(strategies.__file__).parent
    assert all((package / f"{m}.py").is_file() for m in INFRASTRUCTURE)


def test_broken_entry_point_breaks_only_matrices_that_use_it(tmp_path):
    site = fake_distribution(tmp_path / "site", "lrbench-broken",
                             "broken = no_such_module:Thing")
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({**smoke, "seeds": [0]}))
    (tmp_path / "uses.yaml").write_text(yaml.safe_dump(
        {**smoke, "seeds": [0], "strategies": {"finetune": {}, "broken": {}}}))
    # all at once: each spends most of its time importing
    procs = {
        "list": lrbench("list", "strategies", "--json", path=site),
        "ok": lrbench("run", str(tmp_path / "ok.yaml"), "--dry-run", path=site),
        "uses": lrbench("run", str(tmp_path / "uses.yaml"), "--dry-run", path=site),
    }
    done = {key: (p.communicate(timeout=HANG_S), p.returncode) for key, p in procs.items()}
    warning = ("lrbench: warning: strategy entry point 'broken' (no_such_module:Thing) failed "
               "to load: ModuleNotFoundError: No module named 'no_such_module'; fix or "
               "uninstall that package (strategy 'broken' is unavailable)")
    (out, err), code = done["list"]
    assert code == 0, err
    names = {r["name"] for r in json.loads(out)}  # stdout stays clean JSON
    assert "finetune" in names and "broken" not in names
    assert err.splitlines() == [warning]  # once, in one line
    (out, err), code = done["ok"]
    assert code == 0 and "2 cells: 0 done, 2 will run" in out, (out, err)
    assert err.splitlines() == [warning]
    (out, err), code = done["uses"]
    assert code == 2 and out == "", (out, err)
    assert err.splitlines() == [warning, (
        f"lrbench: error: {tmp_path / 'uses.yaml'}: strategy entry point 'broken' "
        "(no_such_module:Thing) failed to load: ModuleNotFoundError: No module "
        "named 'no_such_module'; fix or uninstall that package")]


def test_unknown_strategy_mentions_the_entry_point_group():
    with pytest.raises(StrategyError, match="entry point group 'lrbench.strategies': is "
                       "that package installed"):
        get_strategy("cosine_kd")


def test_strategy_plugin_owns_config():
    """StrategyPlugin.__init__ keeps the config, for every registered strategy; EWC and
    MAS hand theirs to the Avalanche plugin they create."""
    for name, spec in available_strategies().items():
        assert spec.cls().config == spec.config_cls(), name
        given = make_config(name)
        assert spec.cls(given).config is given, name
    ewc = make_plugin("ewc", {"mode": "online", "ewc_lambda": 3})
    assert (ewc.ewc.ewc_lambda, ewc.ewc.mode, ewc.ewc.decay_factor) == (3, "online", 1.0)
    assert ewc.config.decay_factor == 1.0
    mas = make_plugin("mas", {"alpha": 0.25, "lambda_reg": 2})
    assert (mas.mas.alpha, mas.mas._lambda) == (0.25, 2)
    assert make_plugin("l2_kd", {"lam": 2}).teacher is None  # TeacherPlugin's state


def test_strategy_errors_are_lrbench_errors(capsys):
    """One user-error class: the CLI needs no special case for strategies."""
    from metrics.errors import LrbenchError as ground

    assert LrbenchError is ground and issubclass(StrategyError, LrbenchError)
    assert main(["check", "finetun"]) == 2  # StrategyError straight out of the registry
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("lrbench: error: unknown strategy 'finetun'.")


def test_callbacks_are_avalanches_and_listing_strategies_imports_no_avalanche():
    """Strategies stand on ``Callbacks`` (Avalanche's plugin callbacks, doing nothing), so
    ``lrbench list strategies`` and a dry run read every ``Config`` without importing
    Avalanche (seconds of imports); training still goes through Avalanche's template."""
    from avalanche.core import SupervisedPlugin

    from strategies.registry import CALLBACKS, Callbacks

    avalanche = {n for n in dir(SupervisedPlugin) if n.startswith(("before", "after"))}
    assert set(CALLBACKS) == avalanche
    assert {n for n in dir(Callbacks) if n.startswith(("before", "after"))} == avalanche
    code = ("import sys; from benchmarks.cli import main; "
            "rc = main(['run', 'configs/smoke.yaml', '--dry-run', '--out', sys.argv[1]]); "
            "main(['list', 'strategies']); "
            "print(rc, sorted(m for m in sys.modules if m.split('.')[0] == 'avalanche'))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "results" / "no-such-store")],
                         capture_output=True, text=True, cwd=REPO, timeout=HANG_S)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0 []"
