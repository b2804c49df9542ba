"""Train a softmax (multinomial logistic) regression on the Iris data set.

Standard library only, so it runs with the python3 that ships with the machine.
Under `terraform apply` the provider runs it with AML_METRICS_FILE,
AML_OUTPUTS_DIR and the `aml_run` helper on PYTHONPATH; it also runs on its own:

    python3 train.py --C 1.0
"""

import argparse
import csv
import json
import math
import os
import random
import sys
import time

try:
    import aml_run

    log_metric = aml_run.log
except ImportError:
    # Running outside the provider: write the same JSON lines the helper would,
    # or nothing when no metrics file was asked for.
    def log_metric(name, value, step=None):
        path = os.environ.get("AML_METRICS_FILE")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"name": name, "value": value, "step": step}) + "\n")


HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--C", type=float, default=1.0,
                   help="inverse L2 regularisation strength, as in scikit-learn (default 1.0)")
    # Full-batch steps on standardised features tolerate a large step; 0.1 would
    # need a few hundred epochs to get where 1.5 gets in 30.
    p.add_argument("--lr", type=float, default=1.5, help="learning rate (default 1.5)")
    p.add_argument("--epochs", type=int, default=None,
                   help="full-batch gradient steps (default: $EPOCHS, else 30)")
    p.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (default 0.2)")
    p.add_argument("--data", default=os.path.join(HERE, "data", "iris.csv"))
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = int(os.environ.get("EPOCHS", "30"))
    if args.C <= 0:
        p.error("--C must be positive")
    if args.epochs < 1:
        p.error("epochs must be at least 1")
    if not 0 < args.test_fraction < 1:
        p.error("--test-fraction must be between 0 and 1")
    return args


def load(path):
    xs, labels = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            xs.append([float(row[name]) for name in FEATURES])
            labels.append(row["species"])
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return xs, [index[c] for c in labels], classes


def split(xs, ys, test_fraction, seed):
    """Stratified split: each class gives the same share of its rows to the test set."""
    rng = random.Random(seed)
    train, test = [], []
    for label in sorted(set(ys)):
        rows = [i for i, y in enumerate(ys) if y == label]
        rng.shuffle(rows)
        n_test = int(round(len(rows) * test_fraction))
        test += rows[:n_test]
        train += rows[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    pick = lambda idx: ([xs[i] for i in idx], [ys[i] for i in idx])
    return pick(train), pick(test)


def standardiser(xs):
    n, d = len(xs), len(xs[0])
    means = [sum(x[j] for x in xs) / n for j in range(d)]
    stds = [math.sqrt(sum((x[j] - means[j]) ** 2 for x in xs) / n) or 1.0 for j in range(d)]
    return means, stds


def standardise(xs, means, stds):
    return [[(v - m) / s for v, m, s in zip(x, means, stds)] for x in xs]


def softmax_rows(xs, weights, bias):
    probs = []
    for x in xs:
        z = [b + sum(w * v for w, v in zip(wk, x)) for wk, b in zip(weights, bias)]
        top = max(z)
        e = [math.exp(v - top) for v in z]
        total = sum(e)
        probs.append([v / total for v in e])
    return probs


def cross_entropy(probs, ys):
    return -sum(math.log(max(p[y], 1e-15)) for p, y in zip(probs, ys)) / len(ys)


def accuracy(probs, ys):
    hits = sum(1 for p, y in zip(probs, ys) if max(range(len(p)), key=p.__getitem__) == y)
    return hits / len(ys)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()

    xs, ys, classes = load(args.data)
    (x_train, y_train), (x_test, y_test) = split(xs, ys, args.test_fraction, args.seed)
    means, stds = standardiser(x_train)  # train statistics only: no test leakage
    x_train = standardise(x_train, means, stds)
    x_test = standardise(x_test, means, stds)

    k, d, n = len(classes), len(FEATURES), len(x_train)
    weights = [[0.0] * d for _ in range(k)]
    bias = [0.0] * k
    # scikit-learn minimises C * sum(loss) + 0.5 * |W|^2; dividing by C * n gives
    # mean(loss) + l2 / 2 * |W|^2 with l2 = 1 / (C * n). The bias is not penalised.
    l2 = 1.0 / (args.C * n)

    print(f"iris: {n} train / {len(x_test)} test rows, classes={classes}, "
          f"C={args.C} l2={l2:.5f} lr={args.lr} epochs={args.epochs}", flush=True)

    loss = acc = float("nan")
    for epoch in range(1, args.epochs + 1):
        probs = softmax_rows(x_train, weights, bias)
        grad_w = [[l2 * w for w in wk] for wk in weights]
        grad_b = [0.0] * k
        for x, y, p in zip(x_train, y_train, probs):
            for c in range(k):
                err = (p[c] - (1.0 if c == y else 0.0)) / n
                grad_b[c] += err
                row = grad_w[c]
                for j in range(d):
                    row[j] += err * x[j]
        for c in range(k):
            bias[c] -= args.lr * grad_b[c]
            weights[c] = [w - args.lr * g for w, g in zip(weights[c], grad_w[c])]

        # Metrics describe the model after this epoch's update.
        loss = cross_entropy(softmax_rows(x_train, weights, bias), y_train)
        acc = accuracy(softmax_rows(x_test, weights, bias), y_test)
        log_metric("loss", loss, step=epoch)
        log_metric("accuracy", acc, step=epoch)
        print(f"epoch {epoch:3d}/{args.epochs}  loss={loss:.4f}  accuracy={acc:.4f}", flush=True)

    out_dir = os.environ.get("AML_OUTPUTS_DIR", "outputs")
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "model.json")
    with open(model_path, "w", encoding="utf-8") as f:
        json.dump({
            "model": "softmax_regression",
            "features": FEATURES,
            "classes": classes,
            "weights": weights,
            "bias": bias,
            "feature_means": means,
            "feature_stds": stds,
            "hyperparameters": {"C": args.C, "lr": args.lr, "epochs": args.epochs,
                                "seed": args.seed, "test_fraction": args.test_fraction},
            "final": {"loss": loss, "accuracy": acc},
        }, f, indent=2)
        f.write("\n")

    print(f"wrote {model_path}")
    print(f"final accuracy: {acc:.4f} (loss {loss:.4f}, {time.perf_counter() - started:.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
