"""Triton Python-backend model: kwmlp-rt's runtime inside Triton (copied to ``REPO/NAME/1/model.py``).

Needs kwmlp-rt installed in the Python environment that Triton's Python backend runs.
Serves whichever model sits beside it (``model.onnx``): the embedding model or the keyword model.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from kwmlp.runtime.onnxruntime_backend import OrtRunner


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        name = config["parameters"]["model_file"]["string_value"]
        path = os.path.join(args["model_repository"], args["model_version"], name)
        self.runner = OrtRunner(path)
        self.input = config["input"][0]["name"]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        # the dynamic batcher hands over several requests: those of one shape run as one batch
        inputs = [pb_utils.get_input_tensor_by_name(r, self.input).as_numpy() for r in requests]
        groups = {}
        for i, x in enumerate(inputs):
            groups.setdefault(x.shape[1:], []).append(i)
        responses = [None] * len(requests)
        for members in groups.values():
            batch = np.concatenate([inputs[i] for i in members]).astype(np.float32, copy=False)
            out = self.runner.run({self.input: batch})
            start = 0
            for i in members:
                stop = start + len(inputs[i])
                responses[i] = pb_utils.InferenceResponse(
                    [pb_utils.Tensor(n, out[n][start:stop].copy()) for n in self.outputs])
                start = stop
        return responses
