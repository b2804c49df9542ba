"""Trains a pyspark.ml logistic regression on the Iris data shipped next to this
script and logs its test accuracy. Runs unchanged on local[*], a standalone
master or YARN (the data travels with the driver as a DataFrame)."""
import csv
import json
import os
import sys

from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.feature import StringIndexer, VectorAssembler
from pyspark.sql import SparkSession

import aml_run

reg = float(sys.argv[sys.argv.index("--reg") + 1]) if "--reg" in sys.argv else 0.01

spark = SparkSession.builder.getOrCreate()
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "iris.csv")) as f:
    rows = list(csv.DictReader(f))
features = [k for k in rows[0] if k != "species"]
df = spark.createDataFrame([tuple(float(r[k]) for k in features) + (r["species"],) for r in rows], features + ["species"])
df = StringIndexer(inputCol="species", outputCol="label").fit(df).transform(df)
df = VectorAssembler(inputCols=features, outputCol="features").transform(df)
train, test = df.randomSplit([0.8, 0.2], seed=7)

model = LogisticRegression(regParam=reg, maxIter=100).fit(train)
accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(model.transform(test))
print("application", spark.sparkContext.applicationId, "accuracy", accuracy, flush=True)
aml_run.log("accuracy", accuracy)
aml_run.log("train_rows", train.count())
# Written by the driver, so it lands in outputs/ whatever the master.
with open(os.path.join(os.environ.get("AML_OUTPUTS_DIR", "outputs"), "model.json"), "w") as f:
    json.dump({"labels": sorted({r["species"] for r in rows}), "coefficients": model.coefficientMatrix.toArray().tolist(),
               "intercepts": model.interceptVector.toArray().tolist(), "accuracy": accuracy}, f)
spark.stop()
