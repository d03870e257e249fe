"""Declarative study definitions (TOML): parsing and validation.

A study file is data, never code. Every problem is reported as one ``ConfigError`` line that names
the file and the key, before any trial runs.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tuner.errors import ConfigError
from tuner.userdata import DataOptions

__all__ = [
    "IntRange",
    "FloatRange",
    "Choice",
    "Fixed",
    "ParamSpec",
    "SamplerSpec",
    "PrunerSpec",
    "TrainingSpec",
    "StudySpec",
    "is_valid_study_name",
    "MAX_STUDY_NAME",
    "OPTIMIZERS",
    "SCHEDULES",
    "DATASETS",
    "PARAMETERS",
    "CNN_PARAMETERS",
    "FAMILIES",
    "FAMILY_PARAMETERS",
    "NETWORK_SIZE_PARAMETERS",
    "TRAINING_PARAMETERS",
    "OPEN_SPACE",
    "OPEN_SPACES",
    "MAX_SEED",
    "fit_into_range",
    "load_study_file",
    "parse_study",
    "default_study_file",
]

OPTIMIZERS = ("sgd", "sgd_momentum", "rmsprop", "adam")
# How the learning rate moves over a trial's epoch budget (tuner.model builds them).
SCHEDULES = ("constant", "cosine")
DATASETS = ("mnist", "fashion_mnist")
# Model families ([model] family): each has its own architecture parameters; the training ones are shared.
FAMILIES = ("mlp", "cnn")
POOLINGS = ("max", "average")  # a CNN block's 2x2 downsampling
# How a CNN's last feature maps become the dense head's input: every value, or each map's mean.
CNN_HEADS = ("flatten", "global_average")
FILTER_GROWTHS = ("double", "same")  # a CNN block's filters: twice the previous block's, or the same
SAMPLERS = ("tpe", "random")
OBJECTIVES = ("val_loss", "params", "latency")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
# numpy's generators (and so Optuna's samplers and Keras' seeding) take seeds below 2**32.
MAX_SEED = 2**32 - 1
MAX_STUDY_NAME = 200  # characters


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Fixed:
    value: Any


ParamSpec = IntRange | FloatRange | Choice | Fixed


@dataclass(frozen=True)
class _ParamRule:
    kind: type  # int, float, str or bool
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] = ()
    exclusive_max: bool = False

    def widest(self) -> ParamSpec:
        """Every value the rule allows, as a search space."""
        if self.kind is bool:
            return Choice((False, True))
        if self.kind is str:
            return Choice(self.allowed)
        low = 0.0 if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        return IntRange(int(low), int(high)) if self.kind is int else FloatRange(low, high)


# The search space tuner knows how to build. A parameter missing from the file is fixed at its default.
PARAMETERS: Mapping[str, _ParamRule] = MappingProxyType(
    {
        "n_layers": _ParamRule(int, 2, minimum=0, maximum=8),
        "units": _ParamRule(int, 128, minimum=1, maximum=65536),
        "input_dropout": _ParamRule(float, 0.0, minimum=0.0, maximum=1.0, exclusive_max=True),
        "dropout": _ParamRule(float, 0.0, minimum=0.0, maximum=1.0, exclusive_max=True),
        "batch_size": _ParamRule(int, 128, minimum=1, maximum=1 << 20),
        "epochs": _ParamRule(int, 10, minimum=1, maximum=10_000),
        "learning_rate": _ParamRule(float, 1e-3, minimum=0.0, maximum=10.0),
        "optimizer": _ParamRule(str, "adam", allowed=OPTIMIZERS),
        "l2": _ParamRule(float, 0.0, minimum=0.0, maximum=1.0),
        "weight_decay": _ParamRule(float, 0.0, minimum=0.0, maximum=1.0),
        "schedule": _ParamRule(str, "cosine", allowed=SCHEDULES),
    }
)


# What every family trains with (tuner.model draws them after the architecture).
TRAINING_PARAMETERS = ("optimizer", "learning_rate", "schedule", "batch_size", "epochs", "l2", "weight_decay")

# The convolutional family (tuner.cnn builds it): blocks of convolution, optional batch normalisation,
# ReLU and 2x2 pooling, then a dense head. Its training parameters are the MLP's very rules.
CNN_PARAMETERS: Mapping[str, _ParamRule] = MappingProxyType(
    {
        "n_blocks": _ParamRule(int, 2, minimum=1, maximum=8),
        "filters": _ParamRule(int, 32, minimum=1, maximum=1024),  # the first block's; see filter_growth
        "filter_growth": _ParamRule(str, "double", allowed=FILTER_GROWTHS),
        "kernel_size": _ParamRule(int, 3, minimum=1, maximum=15),
        "batch_norm": _ParamRule(bool, False),
        "pooling": _ParamRule(str, "max", allowed=POOLINGS),
        "head": _ParamRule(str, "flatten", allowed=CNN_HEADS),
        "dense_units": _ParamRule(int, 0, minimum=0, maximum=65536),  # 0: the features go straight to the classes
        "dropout": PARAMETERS["dropout"],  # before each dense layer of the head
        **{name: PARAMETERS[name] for name in TRAINING_PARAMETERS},
    }
)

FAMILY_PARAMETERS: Mapping[str, Mapping[str, _ParamRule]] = MappingProxyType({"mlp": PARAMETERS, "cnn": CNN_PARAMETERS})
# The depth and width of each family's network: what the report's contour and pareto's table show of a trial.
NETWORK_SIZE_PARAMETERS: Mapping[str, tuple[str, str]] = MappingProxyType({"mlp": ("n_layers", "units"), "cnn": ("n_blocks", "filters")})


# Every value the builder accepts: lets FixedTrial replay any recorded trial, whatever its study's ranges were.
OPEN_SPACES: Mapping[str, Mapping[str, ParamSpec]] = MappingProxyType(
    {family: MappingProxyType({name: rule.widest() for name, rule in rules.items()}) for family, rules in FAMILY_PARAMETERS.items()}
)
OPEN_SPACE: Mapping[str, ParamSpec] = OPEN_SPACES["mlp"]


@dataclass(frozen=True)
class SamplerSpec:
    kind: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 10


@dataclass(frozen=True)
class PrunerSpec:
    kind: str = "median"
    n_startup_trials: int = 5
    n_warmup_steps: int = 1
    min_resource: int = 1
    reduction_factor: int = 3
    patience: int = 0


@dataclass(frozen=True)
class TrainingSpec:
    patience: int = 3
    steps_per_execution: int = 32
    jit_compile: bool = False
    validation_batch_size: int = 2048


@dataclass(frozen=True)
class StudySpec:
    name: str = "mnist-mlp"
    family: str = "mlp"  # FAMILIES: which network the space describes
    dataset: str = "mnist"
    validation_fraction: float = 1 / 6
    split_seed: int = 0
    label_column: str = "label"  # users' own data: the CSV column holding the class
    image_size: tuple[int, int] = (28, 28)  # users' own data: image folders are resized to this
    color: bool = False
    test_fraction: float = 0.2  # users' own data without a separate test set
    classes: int | None = None  # MNIST-style labels: how many classes, when some have no training sample
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    baselines: bool = True
    portfolio: bool = True  # first trials: tuner.search.PORTFOLIO, strong configurations from the literature
    objectives: tuple[str, ...] = ("val_loss", "params", "latency")  # axes of the accuracy-against-cost front
    convergence_window: int = 20  # trials over which the best value's recent gain is measured
    convergence_tolerance: float = 0.01  # converged: recent gain below this fraction of the best value
    space: Mapping[str, ParamSpec] = field(default_factory=lambda: MappingProxyType({k: Fixed(r.default) for k, r in PARAMETERS.items()}))
    source: str = "<defaults>"

    @property
    def data_options(self) -> DataOptions:
        return DataOptions(
            label_column=self.label_column,
            image_size=self.image_size,
            color=self.color,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            classes=self.classes,
        )

    @property
    def max_epochs(self) -> int:
        epochs = self.space["epochs"]
        if isinstance(epochs, Fixed):
            return int(epochs.value)
        if isinstance(epochs, Choice):
            return int(max(epochs.choices))
        return int(epochs.high)


def fit_into_range(spec: IntRange | FloatRange, value: float) -> int | float:
    """``value`` clipped into the range and, for an integer range, onto its ``step`` grid (low, low + step, ...)."""
    clipped = min(max(value, spec.low), spec.high)
    if isinstance(spec, FloatRange):
        return float(clipped)
    steps = min(round((clipped - spec.low) / spec.step), (spec.high - spec.low) // spec.step)
    return int(spec.low + steps * spec.step)


def is_valid_study_name(name: str) -> bool:
    """The one rule for study names, from a study file, a flag or the API: 1 to 200 characters, not blank, no control characters."""
    return bool(name.strip()) and len(name) <= MAX_STUDY_NAME and not any(ord(c) < 32 for c in name)


def default_study_file() -> Path:
    """The packaged default study (a copy of ``studies/mnist_mlp.toml``)."""
    return Path(__file__).parent / "studies" / "mnist_mlp.toml"


def load_study_file(*, path: str | Path) -> StudySpec:
    """Read and validate a study file; raise ``ConfigError`` with one clear line on any problem.

    Args:
        path: a TOML study file (see studies/mnist_mlp.toml).

    Example::

        spec = load_study_file(path="studies/mnist_mlp.toml")
        print(spec.name, sorted(spec.space))
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"study file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read study file {path}: {exc}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_study(document=document, source=str(path))


def parse_study(*, document: Mapping[str, Any], source: str = "<study>") -> StudySpec:
    """Validate an already-parsed study document; raise ``ConfigError`` with one clear line on any problem.

    Args:
        document: the tables of a study file ([study], [data], [sampler], [pruner], [training], [space]).
        source: what names the document in errors (the file's path for ``load_study_file``).

    Example::

        spec = parse_study(document={"study": {"name": "quick"}, "space": {"epochs": 5}})
    """
    check = _Checker(source)
    check.keys(document, "", {"study", "model", "data", "sampler", "pruner", "training", "space"})
    model = check.table(document, "model")
    study = check.table(document, "study")
    data = check.table(document, "data")
    sampler = check.table(document, "sampler")
    pruner = check.table(document, "pruner")
    training = check.table(document, "training")
    space = check.table(document, "space")

    check.keys(study, "study", {"name", "baselines", "portfolio", "objectives", "convergence_window", "convergence_tolerance"})
    check.keys(
        data, "data", {"dataset", "validation_fraction", "split_seed", "label_column", "image_size", "color", "test_fraction", "classes"}
    )
    check.keys(sampler, "sampler", {"kind", "seed", "n_startup_trials"})
    check.keys(pruner, "pruner", set(PrunerSpec.__dataclass_fields__))
    check.keys(training, "training", set(TrainingSpec.__dataclass_fields__))
    check.keys(model, "model", {"family"})
    family = check.one_of(model, "model", "family", FAMILIES, "mlp")
    rules = FAMILY_PARAMETERS[family]
    for key in space:
        other = next((name for name in FAMILIES if name != family and key in FAMILY_PARAMETERS[name] and key not in rules), None)
        if other is not None:
            check.fail(f"space.{key}", f"is a parameter of [model] family = {other!r}; this study's family is {family!r}")
    check.keys(space, "space", set(rules))

    defaults = StudySpec()
    name = check.value(study, "study", "name", str, defaults.name)
    if not is_valid_study_name(name):
        check.fail("study.name", f"must be 1 to {MAX_STUDY_NAME} characters, none of them control characters")

    sampler_spec = SamplerSpec(
        kind=check.one_of(sampler, "sampler", "kind", SAMPLERS, "tpe"),
        seed=check.integer(sampler, "sampler", "seed", 0, minimum=0, maximum=MAX_SEED),
        n_startup_trials=check.integer(sampler, "sampler", "n_startup_trials", 10, minimum=0),
    )
    pruner_spec = PrunerSpec(
        kind=check.one_of(pruner, "pruner", "kind", PRUNERS, "median"),
        n_startup_trials=check.integer(pruner, "pruner", "n_startup_trials", 5, minimum=0),
        n_warmup_steps=check.integer(pruner, "pruner", "n_warmup_steps", 1, minimum=0),
        min_resource=check.integer(pruner, "pruner", "min_resource", 1, minimum=1),
        reduction_factor=check.integer(pruner, "pruner", "reduction_factor", 3, minimum=2),
        patience=check.integer(pruner, "pruner", "patience", 0, minimum=0),
    )
    training_spec = TrainingSpec(
        patience=check.integer(training, "training", "patience", 3, minimum=0),
        steps_per_execution=check.integer(training, "training", "steps_per_execution", 32, minimum=1),
        jit_compile=check.value(training, "training", "jit_compile", bool, False),
        validation_batch_size=check.integer(training, "training", "validation_batch_size", 2048, minimum=1),
    )
    fraction = check.number(data, "data", "validation_fraction", defaults.validation_fraction)
    if not 0.0 < fraction < 1.0:
        check.fail("data.validation_fraction", f"must be between 0 and 1 (exclusive), got {fraction}")

    test_fraction = check.number(data, "data", "test_fraction", 0.2)
    if not 0.0 < test_fraction < 1.0:
        check.fail("data.test_fraction", f"must be between 0 and 1 (exclusive), got {test_fraction}")
    image_size = check.value(data, "data", "image_size", list, [28, 28])
    if len(image_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1024 for v in image_size):
        check.fail("data.image_size", f"must be [width, height] with whole numbers from 1 to 1024, got {image_size!r}")
    classes = check.integer(data, "data", "classes", 0, minimum=2, maximum=1000) if "classes" in data else None
    label_column = check.value(data, "data", "label_column", str, "label")
    if not label_column.strip():
        check.fail("data.label_column", "must not be empty")

    objectives = check.value(study, "study", "objectives", list, list(defaults.objectives))
    if not objectives or any(item not in OBJECTIVES for item in objectives) or len(set(objectives)) != len(objectives):
        check.fail("study.objectives", f"must be a list of distinct names from {', '.join(OBJECTIVES)}, got {objectives!r}")
    window = check.integer(study, "study", "convergence_window", defaults.convergence_window, minimum=2)
    tolerance = check.number(study, "study", "convergence_tolerance", defaults.convergence_tolerance)
    if not 0.0 <= tolerance < 1.0:
        check.fail("study.convergence_tolerance", f"must be at least 0 and below 1, got {tolerance}")

    params = {key: check.param(key, space[key], rule) if key in space else Fixed(rule.default) for key, rule in rules.items()}
    return StudySpec(
        name=name,
        family=family,
        dataset=check.one_of(data, "data", "dataset", DATASETS, "mnist"),
        validation_fraction=float(fraction),
        split_seed=check.integer(data, "data", "split_seed", 0, minimum=0),
        label_column=label_column,
        image_size=(image_size[0], image_size[1]),
        color=check.value(data, "data", "color", bool, False),
        test_fraction=float(test_fraction),
        classes=classes,
        sampler=sampler_spec,
        pruner=pruner_spec,
        training=training_spec,
        baselines=check.value(study, "study", "baselines", bool, True),
        portfolio=check.value(study, "study", "portfolio", bool, True),
        objectives=tuple(objectives),
        convergence_window=window,
        convergence_tolerance=float(tolerance),
        space=MappingProxyType(params),
        source=source,
    )


class _Checker:
    """Turns each validation failure into one ``ConfigError`` line: ``file: key: problem``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self.source}: {key}: {problem}")

    def table(self, document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
        value = document.get(name, {})
        if not isinstance(value, Mapping):
            self.fail(name, f"must be a table ([{name}]), got {_type_name(value)}")
        return value

    def keys(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                place = f"[{where}]" if where else "the top level"
                expected = ", ".join(sorted(allowed))
                self.fail(_join(where, key), f"unknown key in {place} (expected one of: {expected})")

    def value(self, table: Mapping[str, Any], where: str, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if kind is not bool and isinstance(value, bool) or not isinstance(value, kind):
            self.fail(_join(where, key), f"must be {_kind_name(kind)}, got {_type_name(value)} {value!r}")
        return value

    def integer(self, table: Mapping[str, Any], where: str, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self.value(table, where, key, int, default)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            self.fail(_join(where, key), f"must be {bound}, got {value}")
        return value

    def number(self, table: Mapping[str, Any], where: str, key: str, default: float) -> float:
        value = self.value(table, where, key, (int, float), default)
        if not math.isfinite(value):
            self.fail(_join(where, key), f"must be a finite number, got {value}")
        return float(value)

    def one_of(self, table: Mapping[str, Any], where: str, key: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.value(table, where, key, str, default)
        if value not in allowed:
            self.fail(_join(where, key), f"unknown value {value!r} (expected one of: {', '.join(allowed)})")
        return value

    def param(self, name: str, raw: Any, rule: _ParamRule) -> ParamSpec:
        key = f"space.{name}"
        if isinstance(raw, Mapping):
            if "choices" in raw:
                extra = set(raw) - {"choices"}
                if extra:
                    self.fail(key, f"'choices' cannot be combined with {', '.join(sorted(extra))}")
                choices = raw["choices"]
                if not isinstance(choices, list) or not choices:
                    self.fail(f"{key}.choices", "must be a non-empty list")
                if len(set(map(repr, choices))) != len(choices):
                    self.fail(f"{key}.choices", "must not repeat a value")
                return Choice(tuple(self.scalar(f"{key}.choices", rule, item) for item in choices))
            return self.range(key, rule, raw)
        return Fixed(self.scalar(key, rule, raw))

    def range(self, key: str, rule: _ParamRule, raw: Mapping[str, Any]) -> ParamSpec:
        if rule.kind in (str, bool):
            self.fail(key, "is categorical: give a value or { choices = [...] }, not a range")
        allowed = {"low", "high", "log"} | ({"step"} if rule.kind is int else set())
        self.keys(raw, key, allowed)
        for bound in ("low", "high"):
            if bound not in raw:
                self.fail(key, f"a range needs both 'low' and 'high' (missing '{bound}')")
        low = self.scalar(f"{key}.low", rule, raw["low"])
        high = self.scalar(f"{key}.high", rule, raw["high"])
        log = self.value(raw, key, "log", bool, False)
        if low > high:
            self.fail(key, f"low ({low}) is greater than high ({high})")
        if log and low <= 0:
            self.fail(key, f"a log-scale range needs low > 0, got {low}")
        if rule.kind is int:
            step = self.integer(raw, key, "step", 1, minimum=1)
            if log and step != 1:
                self.fail(key, "step must be 1 on a log-scale range")
            return IntRange(int(low), int(high), log, step)
        return FloatRange(float(low), float(high), log)

    def scalar(self, key: str, rule: _ParamRule, value: Any) -> Any:
        kinds = (int, float) if rule.kind is float else rule.kind
        if (isinstance(value, bool) and rule.kind is not bool) or not isinstance(value, kinds):
            self.fail(key, f"must be {_kind_name(rule.kind)}, got {_type_name(value)} {value!r}")
        if rule.kind is bool:
            return value
        if rule.kind is str:
            if value not in rule.allowed:
                self.fail(key, f"unknown value {value!r} (expected one of: {', '.join(rule.allowed)})")
            return value
        if not math.isfinite(value):
            self.fail(key, f"must be a finite number, got {value}")
        too_high = value >= rule.maximum if rule.exclusive_max else value > rule.maximum
        if value < rule.minimum or too_high:
            upper = f"below {rule.maximum}" if rule.exclusive_max else f"at most {rule.maximum}"
            self.fail(key, f"must be at least {rule.minimum} and {upper}, got {value}")
        return rule.kind(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind_name(kind: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if isinstance(kind, tuple):
        return "a number"
    return names.get(kind, kind.__name__)


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )
