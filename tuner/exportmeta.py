"""What an export records: model.json beside the model, and the study's note of its latest export.

model.json is written by ``export-best`` and read by ``predict`` (strictly: ``ExportMetadata``) and by
``report`` (leniently: ``FinalModelFigures``); the study's note (``ExportRecord``, the study user attribute
``EXPORT_ATTR``) is written by ``export-best`` and read by ``report``.

The record is the one owner of the file's layout. ``predict`` needs more than the Keras model: which
kind of input the model was trained on (MNIST-style digits, a table, an image folder), the class
names, a table's standardisation and an image folder's size and colour. A model.json that is missing,
of another format version or inconsistent with its model is refused rather than guessed around.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import ModelError
from tuner.studyfile import FAMILIES

if TYPE_CHECKING:
    import optuna

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "EXPORT_ATTR",
    "ModelInput",
    "FinalModelScore",
    "ExportMetadata",
    "FinalModelFigures",
    "ExportRecord",
    "finite_number",
]

FORMAT = "tuner-export/2"
METADATA_FILE = "model.json"
EXPORT_ATTR = "export"  # the study user attribute holding its latest export's ExportRecord
_KINDS = ("mnist", "table", "images")


@dataclass(frozen=True)
class ModelInput:
    """How raw inputs become the model's rows, and what its outputs mean."""

    kind: str  # one of tuner.data.INPUT_KINDS
    input_dim: int
    n_classes: int
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] | None = None  # table: its columns, in the model's order
    label_column: str | None = None  # table: the column that holds the class in labelled rows
    feature_mean: tuple[float, ...] | None = None  # table: standardisation of the training part
    feature_std: tuple[float, ...] | None = None
    image_size: tuple[int, int] | None = None  # images: [width, height] every image is resized to
    color: bool = False  # images: RGB rather than grayscale

    def problems(self) -> list[str]:
        found = []
        if self.kind not in _KINDS:
            found.append(f"unknown input kind {self.kind!r}")
        if len(self.class_names) != self.n_classes:
            found.append(f"{len(self.class_names)} class names for {self.n_classes} classes")
        if self.kind == "table":
            for name, values in (
                ("feature_names", self.feature_names),
                ("feature_mean", self.feature_mean),
                ("feature_std", self.feature_std),
            ):
                if values is None or len(values) != self.input_dim:
                    found.append(f"{name} must hold {self.input_dim} entries")
        if self.kind == "images":
            width, height = self.image_size or (0, 0)
            if width * height * (3 if self.color else 1) != self.input_dim:
                found.append(
                    f"image_size {self.image_size} {'colour' if self.color else 'grayscale'} does not give {self.input_dim} features"
                )
        return found


@dataclass(frozen=True)
class FinalModelScore:
    """The final model's one look at the test set: model.json's "test" section."""

    loss: float  # cross-entropy without the L2 penalty, like the objective
    accuracy: float
    n_samples: int
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> FinalModelScore:
        """The section as written by ``to_dict``; raises KeyError, TypeError or ValueError otherwise."""
        return cls(
            loss=float(section["loss"]),
            accuracy=float(section["accuracy"]),
            n_samples=int(section["n_samples"]),
            confusion_matrix=[[int(count) for count in row] for row in section["confusion_matrix"]],
        )


@dataclass(frozen=True)
class ExportMetadata:
    study_name: str
    storage: str
    trial_number: int
    selected: str  # "best", "chosen" (--trial) or "within-budget" (--max-params / --max-latency-ms)
    params: dict[str, Any]
    trial: dict[str, Any]
    test: FinalModelScore | None  # None when model.json has no "test" section: predict does not need one
    training: dict[str, Any]  # epochs, batch size, refit, seed (the trial's own), seconds
    history: list[dict[str, float]]  # per epoch of the final training: {"epoch": n, metric: value, ...}
    data: dict[str, Any]  # provenance: dataset, source, checksums, split
    model_input: ModelInput
    family: str = "mlp"  # studyfile.FAMILIES: the network the study searched (exports before the field were MLPs)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        model_input = self.model_input
        return {
            "format": FORMAT,
            "study_name": self.study_name,
            "storage": self.storage,
            "trial_number": self.trial_number,
            "selected": self.selected,
            "family": self.family,
            "params": self.params,
            "trial": self.trial,
            _TEST: None if self.test is None else self.test.to_dict(),
            "training": {**self.training, _HISTORY: self.history},
            "data": {
                **self.data,
                "kind": model_input.kind,
                "input_dim": model_input.input_dim,
                "n_classes": model_input.n_classes,
                "class_names": list(model_input.class_names),
                "feature_names": _list(model_input.feature_names),
                "label_column": model_input.label_column,
                "feature_mean": _list(model_input.feature_mean),
                "feature_std": _list(model_input.feature_std),
                "image_size": _list(model_input.image_size),
                "color": model_input.color,
            },
            "versions": self.versions,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def write(self, path: Path) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, allow_nan=False)
            handle.write("\n")

    @classmethod
    def from_dir(cls, directory: Path) -> ExportMetadata:
        """Read and check ``directory/model.json``; any problem is one ``ModelError`` line."""
        path = Path(directory) / METADATA_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: missing; predict needs the model.json written with model.keras by 'tuner export-best'") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not readable JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ModelError(f"{path}: does not hold a JSON object")
        if document.get("format") != FORMAT:
            raise ModelError(
                f"{path}: format {document.get('format')!r}, this tuner reads {FORMAT!r}; export the model again with 'tuner export-best'"
            )
        try:
            data = dict(document["data"])
            training = dict(document.get("training") or {})
            history = list(training.pop(_HISTORY, None) or [])
            model_input = ModelInput(
                kind=str(data.pop("kind")),
                input_dim=int(data.pop("input_dim")),
                n_classes=int(data.pop("n_classes")),
                class_names=tuple(str(name) for name in data.pop("class_names")),
                feature_names=_tuple(data.pop("feature_names", None), str),
                label_column=data.pop("label_column", None),
                feature_mean=_tuple(data.pop("feature_mean", None), float),
                feature_std=_tuple(data.pop("feature_std", None), float),
                image_size=_tuple(data.pop("image_size", None), int),
                color=bool(data.pop("color", False)),
            )
            metadata = cls(
                study_name=str(document["study_name"]),
                storage=str(document.get("storage", "")),
                trial_number=int(document["trial_number"]),
                selected=str(document.get("selected", "")),
                params=dict(document.get("params") or {}),
                trial=dict(document.get("trial") or {}),
                test=None if document.get(_TEST) is None else FinalModelScore.from_dict(document[_TEST]),
                training=training,
                history=history,
                data=data,
                model_input=model_input,
                family=str(document.get("family", "mlp")),
                versions=dict(document.get("versions") or {}),
                started_at=str(document.get("started_at", "")),
                finished_at=str(document.get("finished_at", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: incomplete or malformed ({type(exc).__name__}: {exc})") from None
        problems = model_input.problems()
        if metadata.family not in FAMILIES:
            problems.append(f"unknown model family {metadata.family!r}")
        if problems:
            raise ModelError(f"{path}: inconsistent: {'; '.join(problems)}")
        return metadata


_HISTORY = "history"  # the per-epoch history's key in the "training" section
_TEST = "test"  # the FinalModelScore section


@dataclass(frozen=True)
class FinalModelFigures:
    """What a report shows of a model.json, read leniently: a missing or damaged figure reads as None.

    A report of the search must still render when its final model's file is damaged, so nothing here
    raises; the report says which figure it could not show and why.
    """

    test_accuracy: float | None = None
    test_loss: float | None = None
    confusion_matrix: Any = None  # as found; the report checks it is a square numeric matrix
    history: Any = None  # as found; the report checks it is a list of per-epoch records

    @classmethod
    def of_document(cls, document: Mapping[str, Any]) -> FinalModelFigures:
        test, training = _section(document, _TEST), _section(document, "training")
        return cls(
            test_accuracy=finite_number(test.get("accuracy")),
            test_loss=finite_number(test.get("loss")),
            confusion_matrix=test.get("confusion_matrix"),
            history=training.get(_HISTORY),
        )


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = document.get(name)
    return section if isinstance(section, Mapping) else {}


def _list(values: Any) -> list[Any] | None:
    return None if values is None else list(values)


def _tuple(values: Any, kind: type) -> tuple[Any, ...] | None:
    return None if values is None else tuple(kind(value) for value in values)


@dataclass(frozen=True)
class ExportRecord:
    """The study's note of its latest export: where the model was saved, from which trial, how it scored.

    Kept in the study (``EXPORT_ATTR``) so that a report of the study finds its final model. Read
    defensively: a figure that is not a finite number reads as None, since the attribute is plain JSON
    any client of the database may have written.
    """

    path: str
    trial: int | None
    test_accuracy: float | None
    test_loss: float | None
    exported_at: str = ""

    def save(self, study: optuna.Study) -> None:
        study.set_user_attr(
            EXPORT_ATTR,
            {
                "path": self.path,
                "trial": self.trial,
                "test_accuracy": self.test_accuracy,
                "test_loss": self.test_loss,
                "exported_at": self.exported_at,
            },
        )

    @classmethod
    def of_study(cls, user_attrs: Mapping[str, Any]) -> ExportRecord | None:
        """The record in a study's user attributes; None before the first export.

        Raises ``ValueError`` (its message says what is wrong) for a record that names no model directory.
        """
        value = user_attrs.get(EXPORT_ATTR)
        if value is None:
            return None
        if not isinstance(value, dict) or not value.get("path"):
            raise ValueError(f"the study's export record is unreadable ({type(value).__name__} without a path)")
        trial = value.get("trial")
        return cls(
            path=str(value["path"]),
            trial=trial if isinstance(trial, int) and not isinstance(trial, bool) else None,
            test_accuracy=finite_number(value.get("test_accuracy")),
            test_loss=finite_number(value.get("test_loss")),
            exported_at=str(value.get("exported_at", "")),
        )


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite JSON number (not a bool); None otherwise."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None
