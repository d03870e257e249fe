"""``tuner predict``: the class of each input, from an exported model."""

from __future__ import annotations

import json

import click

__all__ = ["predict"]


@click.command()
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(),
    envvar="TUNER_MODEL",
    help="Export directory (or its model.keras) [env TUNER_MODEL].",
)
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--top", "top_k", type=click.IntRange(min=1), default=1, show_default=True, help="Show the K most likely classes per input.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output with all class probabilities.")
def predict(model_dir, files, top_k, as_json) -> None:
    """Predict the class of each input, converted as the model's training data was (see its model.json).

    \b
    MNIST-style models: images (PNG/JPEG/BMP, any size, photos too) or .npy arrays of 28x28 digits.
    Table models: CSV rows with the training header (with the label column, the accuracy is printed too)
    or .npy rows of raw features. Image-folder models: images, or .npy arrays of pixel rows.
    """
    from tuner.predict import predict_digits

    result = predict_digits(model=model_dir, inputs=files)
    digits = result.kind == "mnist"  # MNIST-style class names are the digits themselves
    if as_json:
        document = {
            "model": str(result.model_path),
            "kind": result.kind,
            "class_names": list(result.class_names),
            "accuracy": result.accuracy,
            "n_labelled": result.n_labelled,
            "predictions": [
                {
                    "input": p.source,
                    "label": p.label,
                    "class_index": p.index,
                    **({"digit": p.index} if digits else {}),
                    **({"true_label": p.true_label} if p.true_label is not None else {}),
                    "probability": p.probability,
                    "top": [{"label": name, "probability": q} for name, q in p.top(top_k)],
                    "probabilities": list(p.probabilities),
                }
                for p in result.predictions
            ],
        }
        click.echo(json.dumps(document, indent=2))
        return
    width = max(len(p.source) for p in result.predictions)
    for p in result.predictions:
        ranked = "   ".join(f"{name} {q:.3f}" for name, q in p.top(top_k))
        click.echo(f"{p.source:<{width}}  {ranked}")
    if result.accuracy is not None:
        click.echo(f"accuracy {result.accuracy:.4f} on {result.n_labelled} labelled rows")
