"""A training script written for Azure ML SDK v1, unchanged.

It uses only the Python standard library: a logistic regression on a small
synthetic data set, trained by gradient descent. Run.get_context() is the
current run: metrics, tags and uploaded files go into the run's attributes
(metrics, script_tags, output_files), as they went into an Azure ML run.
"""
import argparse
import json
import math
import os
import random

from azureml.core import Run

parser = argparse.ArgumentParser()
parser.add_argument("--learning-rate", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=40)
args = parser.parse_args()

run = Run.get_context()
run.tag("model", "logistic-regression")
print("run %s of experiment %s, learning rate %g" % (run.id, run.experiment.name, args.learning_rate))

rng = random.Random(7)
data = []
for _ in range(400):
    x1, x2 = rng.gauss(0, 1), rng.gauss(0, 1)
    data.append(((x1, x2), 1 if x1 + 0.5 * x2 + rng.gauss(0, 0.5) > 0 else 0))
train, test = data[:300], data[300:]

w1 = w2 = b = 0.0
for epoch in range(args.epochs):
    loss = 0.0
    g1 = g2 = gb = 0.0
    for (x1, x2), y in train:
        p = 1 / (1 + math.exp(-(w1 * x1 + w2 * x2 + b)))
        loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
        g1, g2, gb = g1 + (p - y) * x1, g2 + (p - y) * x2, gb + (p - y)
    n = len(train)
    w1, w2, b = w1 - args.learning_rate * g1 / n, w2 - args.learning_rate * g2 / n, b - args.learning_rate * gb / n
    run.log("loss", loss / n)

correct = sum(1 for (x1, x2), y in test if (w1 * x1 + w2 * x2 + b > 0) == (y == 1))
accuracy = correct / len(test)
run.log("accuracy", accuracy)
run.log_list("weights", [w1, w2, b])
run.log_row("decision boundary", slope=-w1 / w2 if w2 else 0.0, intercept=-b / w2 if w2 else 0.0)

with open("model.json", "w") as f:
    json.dump({"w": [w1, w2], "b": b}, f)
run.upload_file("outputs/model.json", "model.json")
print("accuracy %.3f" % accuracy)
