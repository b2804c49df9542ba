"""Train a linear classifier on scikit-learn's handwritten digits.

Run by terraform-provider-aml: metrics go through the `aml_run` helper, the model
to $AML_OUTPUTS_DIR. Also runs on its own: `python train.py`.
"""
import argparse
import os
import pickle
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

try:
    import aml_run
except ImportError:  # standalone: no metrics sink
    aml_run = None


def log(name, value, step):
    if aml_run is not None:
        aml_run.log(name, value, step=step)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--alpha", type=float, default=1e-4, help="L2 regularisation strength")
    p.add_argument("--epochs", type=int, default=int(os.environ.get("EPOCHS", "20")))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    start = time.time()
    X, y = load_digits(return_X_y=True)  # ships with scikit-learn: no download
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=args.seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)

    clf = SGDClassifier(loss="log_loss", alpha=args.alpha, random_state=args.seed)
    classes = np.unique(y)
    rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(X_train))
        clf.partial_fit(X_train[order], y_train[order], classes=classes)
        loss = log_loss(y_train, clf.predict_proba(X_train), labels=classes)
        acc = accuracy_score(y_test, clf.predict(X_test))
        log("loss", loss, epoch)
        log("accuracy", acc, epoch)
        print(f"epoch {epoch:3d}/{args.epochs}  loss={loss:.4f}  accuracy={acc:.4f}", flush=True)

    out_dir = os.environ.get("AML_OUTPUTS_DIR", "outputs")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.pkl")
    with open(path, "wb") as f:
        pickle.dump({"scaler": scaler, "classifier": clf}, f)
    print(f"wrote {path}")
    print(f"final accuracy: {acc:.4f} (loss {loss:.4f}, {time.time() - start:.2f}s, "
          f"{len(X_train)} train / {len(X_test)} test images)")


if __name__ == "__main__":
    main()
