"""Runs exported artifacts in their own runtime, in a process that never imports
efficientnet_jax: what a serving client has is the artifact file and its runtime.

  python run_artifact.py JOBS.json

JOBS.json is a list of {"format": stablehlo|savedmodel|tflite|onnx, "artifact": path,
"inputs": an .npz of input batches, "outputs": the .npz to write}; each input array
NAME gives outputs "NAME/<output name>". Prints one JSON line at the end: the modules
seen ({"efficientnet_jax_imported": false} is what the tests assert).
"""

import json
import sys

import numpy as np


def stablehlo(artifact):
  import jax
  with open(artifact, "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  return lambda images: {k: np.asarray(v) for k, v in exported.call(images).items()}


def savedmodel(artifact):
  import tensorflow as tf
  serve = tf.saved_model.load(artifact).signatures["serving_default"]
  return lambda images: {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}


def tflite(artifact):
  from ai_edge_litert.interpreter import Interpreter
  runner = Interpreter(model_path=artifact).get_signature_runner("serving_default")
  return lambda images: dict(runner(images=images))


def onnx(artifact):
  import onnxruntime
  session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]
  return lambda images: dict(zip(names, session.run(None, {"images": images})))


RUNTIMES = {"stablehlo": stablehlo, "savedmodel": savedmodel, "tflite": tflite, "onnx": onnx}


def main(jobs_file):
  with open(jobs_file) as f:
    jobs = json.load(f)
  for job in jobs:
    run = RUNTIMES[job["format"]](job["artifact"])
    inputs = np.load(job["inputs"])
    outputs = {}
    for name in inputs.files:
      for key, value in run(inputs[name]).items():
        outputs[f"{name}/{key}"] = np.asarray(value)
    np.savez(job["outputs"], **outputs)
  print(json.dumps({"efficientnet_jax_imported": any(
      m == "efficientnet_jax" or m.startswith("efficientnet_jax.") for m in sys.modules)}))


if __name__ == "__main__":
  main(sys.argv[1])
