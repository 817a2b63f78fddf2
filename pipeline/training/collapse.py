"""Did training produce a model that works in inference mode? Compared with chance and with
the accuracy the model showed while training."""
from __future__ import annotations

import math

import numpy as np

# Collapsed: inference accuracy no better than chance plus this share of the way to 100%
# (10 balanced classes: 0.1 + 0.1 * 0.9 = 0.19) ...
CHANCE_MARGIN = 0.1
# ... or this far below the training accuracy Keras reported for the last epoch (training
# mode): a gap that size is not overfitting on these data sets but a model that behaves
# differently in inference (BatchNorm statistics, dropout, a frozen layer).
MAX_TRAIN_GAP = 0.5


def check_collapse(model, x: np.ndarray, y: np.ndarray, history: dict, num_classes: int) -> dict:
    """Inference-mode accuracy on ``x``/``y`` against chance and training accuracy."""
    predictions = np.asarray(model.predict(x, batch_size=256, verbose=0))
    return judge(float(np.mean(predictions.argmax(-1) == y)), y, history, num_classes)


def judge(accuracy: float, y: np.ndarray, history: dict, num_classes: int) -> dict:
    """The verdict for an inference ``accuracy`` on labels ``y`` (pure: no model needed)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)
    chance = float(counts.max() / max(counts.sum(), 1))  # always predicting the majority class
    losses = history.get("loss") or [0.0]  # none recorded (an imported model): nothing diverged here
    train_accuracy = (history.get("accuracy") or [None])[-1]
    reason = None
    if not math.isfinite(losses[-1]):
        reason = ("the training loss became NaN/inf: the model diverged; lower --learning-rate "
                  "or check the data for extreme values")
    elif train_accuracy is not None and train_accuracy - accuracy > MAX_TRAIN_GAP:
        reason = (f"inference accuracy {accuracy:.3f} is far below the training accuracy "
                  f"{train_accuracy:.3f}: the model behaves differently outside training "
                  f"(BatchNormalization statistics or dropout); train longer or lower the "
                  f"BatchNormalization momentum")
    elif accuracy <= chance + CHANCE_MARGIN * (1 - chance):
        reason = (f"inference accuracy {accuracy:.3f} is at chance level ({chance:.3f}): the "
                  f"model did not learn; check --learning-rate (too high diverges, too low "
                  f"stalls), --epochs and the labels")
    return {"collapsed": reason is not None, "reason": f"model collapsed: {reason}" if reason else None,
            "accuracy": round(accuracy, 6), "train_accuracy": train_accuracy,
            "chance": round(chance, 6), "samples": int(len(y))}
